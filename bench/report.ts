/** The benchmark's outputs: the markdown table (with ratios to shipshape) and the SVG chart. */

import { ratio, type Summary } from "./stats.ts";

/** One figure: how it is named in the table and chart, its unit and which way is better. */
export interface Figure {
  key: string;
  label: string;
  unit: string;
  /** Divides raw samples for display (bytes -> MiB). */
  scale: number;
  better: "lower" | "higher";
  /** Counts: shown as whole numbers. */
  integer?: boolean;
}

/** The figures, in table order. */
export const FIGURES: Figure[] = [
  { key: "image", label: "image", unit: "MiB", scale: 1048576, better: "lower" },
  { key: "image_gzip", label: "image gz", unit: "MiB", scale: 1048576, better: "lower" },
  { key: "binary", label: "binary", unit: "MiB", scale: 1048576, better: "lower" },
  { key: "ready", label: "ready", unit: "ms", scale: 1, better: "lower" },
  { key: "stop", label: "stop idle", unit: "ms", scale: 1, better: "lower" },
  { key: "drain_stop", label: "stop 10 in-flight", unit: "ms", scale: 1, better: "lower" },
  { key: "drain_ok", label: "in-flight ok", unit: "of 10", scale: 1, better: "higher" },
  { key: "rss_idle", label: "RSS idle", unit: "MiB", scale: 1048576, better: "lower" },
  { key: "rss_load", label: "RSS load", unit: "MiB", scale: 1048576, better: "lower" },
  { key: "rps", label: "req/s", unit: "req/s", scale: 1, better: "higher" },
  { key: "p99", label: "p99", unit: "ms", scale: 1, better: "lower" },
  { key: "cpu_request", label: "CPU per request", unit: "µs", scale: 1, better: "lower" },
];

/** The figures whose ratio to shipshape is reported. */
export const HEADLINE = ["ready", "stop", "drain_ok", "rss_idle", "rps", "p99", "cpu_request"];

/** One row of results: a subject's summaries by figure key, or the reason it was skipped. */
export interface Row {
  name: string;
  skip?: string;
  figures: { [key: string]: Summary | undefined };
}

function number(value: number, integer = false): string {
  if (integer) return Math.round(value).toLocaleString("en-US");
  if (value >= 1000) return Math.round(value).toLocaleString("en-US");
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** A table cell: the median, with min-max when the samples differ. */
export function cell(summary: Summary | undefined, scale = 1, integer = false): string {
  if (!summary) return "-";
  const median = number(summary.median / scale, integer);
  if (summary.n === 1 || summary.min === summary.max) return median;
  return `${median} (${number(summary.min / scale, integer)}-${number(summary.max / scale, integer)})`;
}

function table(measured: Row[], figures: Figure[]): string[] {
  const head = ["subject", ...figures.map((f) => `${f.label} (${f.unit})`)];
  return [
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => i === 0 ? "---" : "---:").join(" | ")} |`,
    ...measured.map((r) =>
      `| ${[r.name, ...figures.map((f) => cell(r.figures[f.key], f.scale, f.integer))].join(" | ")} |`
    ),
  ];
}

function ratioTable(measured: Row[], reference: Row, figures: Figure[]): string[] {
  const ratioHead = ["subject", ...figures.map((f) => `${f.label} x`)];
  return [
    `Ratios to ${reference.name} (median / median; ${
      figures.map((f) => `${f.label}: ${f.better} is better`).join(", ")
    }):`,
    "",
    `| ${ratioHead.join(" | ")} |`,
    `| ${ratioHead.map((_, i) => i === 0 ? "---" : "---:").join(" | ")} |`,
    ...measured.map((r) => {
      const cells = figures.map((f) => {
        const x = ratio(r.figures[f.key]?.median, reference.figures[f.key]?.median);
        return x === undefined ? "-" : x.toFixed(2);
      });
      return `| ${[r.name, ...cells].join(" | ")} |`;
    }),
  ];
}

function skipLines(rows: Row[]): string[] {
  const skipped = rows.filter((r) => r.skip);
  return skipped.length ? ["", ...skipped.map((r) => `Skipped: ${r.skip}`)] : [];
}

/** The markdown results table and the table of ratios to the first row (shipshape). */
export function markdown(rows: Row[]): string {
  const measured = rows.filter((r) => !r.skip);
  const lines = table(measured, FIGURES);
  const reference = measured[0];
  if (reference) {
    lines.push("", ...ratioTable(measured, reference, FIGURES.filter((f) => HEADLINE.includes(f.key))));
  }
  lines.push(...skipLines(rows));
  return lines.join("\n") + "\n";
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A markdown table of chosen figures, without ratios (the rollout's failure counts have no useful ratio). */
export function figureMarkdown(rows: Row[], figures: Figure[]): string {
  return [...table(rows.filter((r) => !r.skip), figures), ...skipLines(rows)].join("\n") + "\n";
}

/** An SVG chart: one panel per figure that has data, subjects as horizontal bars with min-max whiskers. */
export function svg(rows: Row[], title: string): string {
  return chart(rows, title, FIGURES);
}

/** svg() over a chosen list of figures (the benchmark adds the container and per-route figures). */
export function chart(rows: Row[], title: string, figures: Figure[]): string {
  const measured = rows.filter((r) => !r.skip);
  const panels = figures.filter((f) => measured.some((r) => r.figures[f.key]));
  const columns = 2;
  const barHeight = 18;
  const labelWidth = 150;
  const barWidth = 250;
  const panelWidth = labelWidth + barWidth + 90;
  const panelHeight = 34 + measured.length * (barHeight + 6);
  const width = columns * panelWidth + 20;
  const height = 50 + Math.ceil(panels.length / columns) * (panelHeight + 16);
  const colors = [
    "#2f6fb0",
    "#7aa6d6",
    "#4c9a6a",
    "#c08a2d",
    "#a04b6e",
    "#777777",
    "#6b4fa8",
    "#3d8c8c",
    "#b5542f",
    "#8c8c3d",
    "#2f8fb5",
    "#d07aa6",
  ];
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="24" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  panels.forEach((f, p) => {
    const x0 = 10 + (p % columns) * panelWidth;
    const y0 = 40 + Math.floor(p / columns) * (panelHeight + 16);
    const max = Math.max(...measured.map((r) => (r.figures[f.key]?.max ?? 0) / f.scale), 1e-9);
    parts.push(
      `<g transform="translate(${x0},${y0})">`,
      `<text x="0" y="14" font-weight="bold">${escapeXml(`${f.label} (${f.unit}), ${f.better} is better`)}</text>`,
    );
    measured.forEach((r, i) => {
      const y = 24 + i * (barHeight + 6);
      const s = r.figures[f.key];
      parts.push(`<text x="0" y="${y + 13}">${escapeXml(r.name)}</text>`);
      if (!s) {
        parts.push(`<text x="${labelWidth}" y="${y + 13}" fill="#888888">not measured</text>`);
        return;
      }
      const w = (s.median / f.scale / max) * barWidth;
      const lo = labelWidth + (s.min / f.scale / max) * barWidth;
      const hi = labelWidth + (s.max / f.scale / max) * barWidth;
      parts.push(
        `<rect x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" fill="${
          colors[i % colors.length]
        }"/>`,
        `<line x1="${lo.toFixed(1)}" x2="${hi.toFixed(1)}" y1="${y + barHeight / 2}" y2="${
          y + barHeight / 2
        }" stroke="#222222"/>`,
        `<text x="${(labelWidth + Math.max(w, hi - labelWidth) + 4).toFixed(1)}" y="${y + 13}">${
          escapeXml(number(s.median / f.scale, f.integer))
        }</text>`,
      );
    });
    parts.push("</g>");
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** The image's size over the binary it runs: what the base and the packaging add. */
export const IMAGE_OVERHEAD: Figure = {
  key: "image_overhead",
  label: "image over binary",
  unit: "MiB",
  scale: 1048576,
  better: "lower",
};

function figure(key: string): Figure {
  const found = FIGURES.find((f) => f.key === key);
  if (!found) throw new Error(`No figure ${key}`);
  return found;
}

/** The columns of the container table: today's columns plus the image's overhead over its binary. */
export const CONTAINER_FIGURES: Figure[] = [
  ...["image", "image_gzip", "binary"].map(figure),
  IMAGE_OVERHEAD,
  ...["ready", "stop", "drain_stop", "drain_ok", "rss_idle", "rss_load", "rps", "p99", "cpu_request"].map(figure),
];

/** The figures whose ratio to the container floor is reported. */
export const CONTAINER_HEADLINE = ["ready", "stop", "drain_stop", "rss_idle", "rps", "cpu_request"];

/**
 * The container table (rows side by side, each started with the same engine flags), then the ratios to the
 * floor row named `floor` (the Go scratch image), then the skipped rows.
 */
export function containerMarkdown(rows: Row[], floor: string): string {
  const measured = rows.filter((r) => !r.skip);
  const lines = table(measured, CONTAINER_FIGURES);
  const reference = measured.find((r) => r.name === floor);
  if (reference) {
    lines.push(
      "",
      ...ratioTable(measured, reference, CONTAINER_FIGURES.filter((f) => CONTAINER_HEADLINE.includes(f.key))),
    );
  }
  lines.push(...skipLines(rows));
  return lines.join("\n") + "\n";
}

/** A route under load, the figure-key suffix of its measurements, its same-response floor and its bare server. */
export interface Route {
  path: string;
  /** Appended to rps, p99, cpu_request, rss_load and log_lines ("" for /readyz, today's keys). */
  suffix: string;
  /** The subject that sends the same bytes and headers with the least work Deno allows. */
  floor: string;
  /** The subject that sends the same body with Content-Type alone (Deno.serve's fast path). */
  bare: string;
}

/** The routes the benchmark loads, each beside its same-response floor. */
export const ROUTES: Route[] = [
  { path: "/readyz", suffix: "", floor: "deno bare + contract", bare: "deno bare" },
  { path: "/", suffix: "_page", floor: "deno bare + contract", bare: "deno bare" },
];

/** The per-route copies of the load figures (req/s, p99, CPU per request on `/`), for the chart. */
export function routeFigures(route: Route): Figure[] {
  return ["rps", "p99", "cpu_request"].map((key) => {
    const f = figure(key);
    return { ...f, key: key + route.suffix, label: `${f.label} on ${route.path}` };
  });
}

function fixed(value: number | undefined, digits = 2): string {
  return value === undefined ? "-" : value.toFixed(digits);
}

/**
 * Throughput per route: req/s and CPU per request of each subject that carries the route, with its ratio to the
 * route's same-response floor and to the bare server in the same run.
 */
export function routeMarkdown(rows: Row[], routes: Route[] = ROUTES): string {
  const head = [
    "route",
    "subject",
    "req/s",
    "req/s x floor",
    "req/s x bare",
    "CPU per request (µs)",
    "CPU x floor",
    "CPU x bare",
    "p99 (ms)",
  ];
  const lines = [`| ${head.join(" | ")} |`, `| ${head.map((_, i) => i < 2 ? "---" : "---:").join(" | ")} |`];
  for (const route of routes) {
    const key = (base: string) => base + route.suffix;
    const floor = rows.find((r) => r.name === route.floor && !r.skip);
    const bare = rows.find((r) => r.name === route.bare && !r.skip);
    for (const r of rows.filter((r) => !r.skip && r.figures[key("rps")])) {
      const rps = r.figures[key("rps")]?.median;
      const cpu = r.figures[key("cpu_request")]?.median;
      lines.push(
        `| ${
          [
            route.path,
            r.name,
            cell(r.figures[key("rps")]),
            fixed(ratio(rps, floor?.figures[key("rps")]?.median)),
            fixed(ratio(rps, bare?.figures[key("rps")]?.median)),
            cell(r.figures[key("cpu_request")]),
            fixed(ratio(cpu, floor?.figures[key("cpu_request")]?.median)),
            fixed(ratio(cpu, bare?.figures[key("cpu_request")]?.median)),
            cell(r.figures[key("p99")]),
          ].join(" | ")
        } |`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** One measured target: what was compared, the value, the limit and whether it was met. */
export interface TargetCheck {
  text: string;
  met: boolean | undefined;
}

/** The benchmark's targets (container start and stop near the Go floor, image near its binary, each route near its same-response floor), as ratios in the same run. */
export const TARGETS = {
  /** Container ready: at most this times the Go scratch floor's. */
  readyVsFloor: 1.25,
  /** Container idle stop: at most this times the Go scratch floor's. */
  stopVsFloor: 1.1,
  /** Image size over the binary it runs, in bytes (5 MB). */
  imageOverheadBytes: 5_000_000,
  /** Each route, by req/s and by CPU per request (floor CPU / ours): at least this fraction of its floor. */
  routeVsFloor: 0.95,
};

/**
 * Checks the targets on the measured rows: containers against the floor container `floor`, routes against their
 * same-response floors. `containers` and `servers` name the rows checked. Undefined `met`: not measured.
 */
export function checkTargets(
  rows: Row[],
  options: { floor: string; containers: string[]; servers: string[]; routes?: Route[] },
): TargetCheck[] {
  const byName = (name: string) => rows.find((r) => r.name === name && !r.skip);
  const median = (name: string, key: string) => byName(name)?.figures[key]?.median;
  const checks: TargetCheck[] = [];
  const verdict = (met: boolean | undefined) => met === undefined ? "not measured" : met ? "met" : "NOT met";
  const ms = (value: number | undefined) => value === undefined ? "-" : cell({ median: value, min: 0, max: 0, n: 1 });
  function check(text: string, value: number | undefined, limit: number, lowerIsBetter: boolean): void {
    const met = value === undefined ? undefined : lowerIsBetter ? value <= limit : value >= limit;
    const target = `target ${lowerIsBetter ? "at most" : "at least"} ${limit}`;
    checks.push({ text: `${text.replace("{}", fixed(value))} (${target}): ${verdict(met)}`, met });
  }
  const { floor } = options;
  for (const name of options.containers.filter(byName)) {
    for (const [key, what] of [["ready", "ready"], ["stop", "idle stop"]]) {
      const limit = key === "ready" ? TARGETS.readyVsFloor : TARGETS.stopVsFloor;
      const [ours, theirs] = [median(name, key), median(floor, key)];
      check(
        `${name}: ${what} {}x the ${floor}'s (${ms(ours)} ms against ${ms(theirs)} ms)`,
        ratio(ours, theirs),
        limit,
        true,
      );
    }
    const overhead = median(name, "image_overhead");
    const met = overhead === undefined ? undefined : overhead <= TARGETS.imageOverheadBytes;
    const mb = overhead === undefined
      ? "-"
      : `${(overhead / 1e6).toFixed(2)} MB (${(overhead / 1048576).toFixed(2)} MiB)`;
    checks.push({
      text: `${name}: image ${mb} over its binary (target at most ${TARGETS.imageOverheadBytes / 1e6} MB): ${
        verdict(met)
      }`,
      met,
    });
  }
  for (const route of options.routes ?? ROUTES) {
    const [rpsKey, cpuKey] = ["rps" + route.suffix, "cpu_request" + route.suffix];
    for (const name of options.servers.filter(byName)) {
      const [rps, floorRps] = [median(name, rpsKey), median(route.floor, rpsKey)];
      check(
        `${route.path}: ${name} by req/s: {} of its same-response floor (${ms(rps)} against ${ms(floorRps)})`,
        ratio(rps, floorRps),
        TARGETS.routeVsFloor,
        false,
      );
      const [cpu, floorCpu] = [median(name, cpuKey), median(route.floor, cpuKey)];
      check(
        `${route.path}: ${name} by CPU per request: {} of its same-response floor (the floor's ${
          ms(floorCpu)
        } µs / its ${ms(cpu)} µs)`,
        ratio(floorCpu, cpu),
        TARGETS.routeVsFloor,
        false,
      );
    }
  }
  return checks;
}

/** Writes a run's outputs beside each other: `stem`.json (the raw record), `stem`.md (the table), `stem`.svg. */
export function writeResults(stem: string, record: unknown, table: string, chart: string): void {
  Deno.mkdirSync(stem.slice(0, stem.lastIndexOf("/")) || ".", { recursive: true });
  Deno.writeTextFileSync(`${stem}.json`, JSON.stringify(record, null, 2) + "\n");
  Deno.writeTextFileSync(`${stem}.md`, table);
  Deno.writeTextFileSync(`${stem}.svg`, chart);
}
