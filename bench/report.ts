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

/**
 * The markdown results table and the table of ratios to the first row (shipshape); other figures than the
 * benchmark's can be given (the rollout's), and no ratio table when `headline` is empty.
 */
export function markdown(rows: Row[], figures: Figure[] = FIGURES, headline: string[] = HEADLINE): string {
  const measured = rows.filter((r) => !r.skip);
  const head = ["subject", ...figures.map((f) => `${f.label} (${f.unit})`)];
  const lines = [
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => i === 0 ? "---" : "---:").join(" | ")} |`,
    ...measured.map((r) =>
      `| ${[r.name, ...figures.map((f) => cell(r.figures[f.key], f.scale, f.integer))].join(" | ")} |`
    ),
  ];
  const reference = measured[0];
  const ratioFigures = figures.filter((f) => headline.includes(f.key));
  if (reference && ratioFigures.length) {
    const ratioHead = ["subject", ...ratioFigures.map((f) => `${f.label} x`)];
    lines.push(
      "",
      `Ratios to ${reference.name} (median / median; ${
        ratioFigures.map((f) => `${f.label}: ${f.better} is better`).join(", ")
      }):`,
      "",
      `| ${ratioHead.join(" | ")} |`,
      `| ${ratioHead.map((_, i) => i === 0 ? "---" : "---:").join(" | ")} |`,
      ...measured.map((r) => {
        const cells = ratioFigures.map((f) => {
          const x = ratio(r.figures[f.key]?.median, reference.figures[f.key]?.median);
          return x === undefined ? "-" : x.toFixed(2);
        });
        return `| ${[r.name, ...cells].join(" | ")} |`;
      }),
    );
  }
  const skipped = rows.filter((r) => r.skip);
  if (skipped.length) lines.push("", ...skipped.map((r) => `Skipped: ${r.skip}`));
  return lines.join("\n") + "\n";
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** An SVG chart: one panel per figure that has data, subjects as horizontal bars with min-max whiskers. */
export function svg(rows: Row[], title: string, figures: Figure[] = FIGURES): string {
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
  const colors = ["#2f6fb0", "#7aa6d6", "#4c9a6a", "#c08a2d", "#a04b6e", "#777777", "#6b4fa8", "#3d8c8c"];
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

/** Writes a run's outputs beside each other: `stem`.json (the raw record), `stem`.md (the table), `stem`.svg. */
export function writeResults(stem: string, record: unknown, table: string, chart: string): void {
  Deno.mkdirSync(stem.slice(0, stem.lastIndexOf("/")) || ".", { recursive: true });
  Deno.writeTextFileSync(`${stem}.json`, JSON.stringify(record, null, 2) + "\n");
  Deno.writeTextFileSync(`${stem}.md`, table);
  Deno.writeTextFileSync(`${stem}.svg`, chart);
}
