/**
 * `deno task bench [--quick]`: image size, start, stop, drain, memory and throughput of shipshape next to the
 * alternatives, measured in one run on one machine, subjects interleaved round by round so drift on a shared
 * machine spreads over all of them. Table on stdout, progress on stderr, raw samples, table and chart in
 * bench/results/.
 *
 * Options: --quick (well under 2 minutes), --only NAME[,NAME] (subjects by name), --out DIR, and for tests
 * --runs N and --seconds N (load duration).
 */

import { haveWrk, runLoad } from "./load.ts";
import {
  chart,
  checkTargets,
  containerMarkdown,
  FIGURES,
  IMAGE_OVERHEAD,
  markdown,
  routeFigures,
  routeMarkdown,
  ROUTES,
  type Row,
} from "./report.ts";
import { summarize } from "./stats.ts";
import { cpuSeconds, freePort, getFresh, rssBytes, sleep } from "../testing.ts";
import { imageBinaryBytes, imageSizes, type Running, type Subject, subjects } from "./subjects.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** The container floor: the static Go server in an image FROM scratch. */
const GO_FLOOR = "go scratch container";

interface Options {
  quick: boolean;
  only?: string[];
  out: string;
  starts: number;
  drains: number;
  loadRounds: number;
  loadSeconds: number;
}

function parseOptions(args: string[]): Options {
  const quick = args.includes("--quick");
  const value = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const known = new Set(["--quick", "--only", "--out", "--runs", "--seconds"]);
  for (const [i, arg] of args.entries()) {
    if (arg.startsWith("--") && !known.has(arg)) throw new Error(`unknown option ${arg}`);
    if (!arg.startsWith("--") && !["--only", "--out", "--runs", "--seconds"].includes(args[i - 1])) {
      throw new Error(`unexpected argument ${arg}`);
    }
  }
  const runs = value("--runs") ? Number(value("--runs")) : undefined;
  const seconds = value("--seconds") ? Number(value("--seconds")) : undefined;
  return {
    quick,
    only: value("--only")?.split(","),
    out: value("--out") ?? `${ROOT}bench/results`,
    starts: runs ?? (quick ? 2 : 11),
    drains: runs ?? (quick ? 1 : 3),
    loadRounds: runs ?? (quick ? 1 : 5),
    loadSeconds: seconds ?? (quick ? 2 : 10),
  };
}

const BEGAN = performance.now();

function progress(message: string): void {
  const at = ((performance.now() - BEGAN) / 1000).toFixed(1);
  Deno.stderr.writeSync(new TextEncoder().encode(`bench: ${message} (at ${at} s)\n`));
}

/** GET on its own connection; the status and whether the whole body arrived, or 0 on a failed request. */
function get(url: string): Promise<number> {
  return getFresh(url).then((r) => r.status, () => 0);
}

/** Starts the subject and polls /readyz until 200; the time from spawn to the first 200, in ms. */
async function startReady(subject: Subject): Promise<{ running: Running; readyMs: number }> {
  const port = freePort();
  const started = performance.now();
  const running = subject.start(port);
  const deadline = started + 30_000;
  let exited = false;
  running.exited.then(() => exited = true);
  while (true) {
    if (await get(`http://127.0.0.1:${port}/readyz`) === 200) {
      return { running, readyMs: performance.now() - started };
    }
    if (exited || performance.now() > deadline) {
      await running.kill();
      throw new Error(`${subject.name} did not answer /readyz within 30 s (exited: ${exited})`);
    }
    await sleep(2);
  }
}

/** SIGTERM and the time until the process has exited, in ms; the exit code. */
async function terminate(running: Running): Promise<{ stopMs: number; code: number }> {
  const started = performance.now();
  await running.terminate();
  const code = await running.exited;
  return { stopMs: performance.now() - started, code };
}

type Samples = { [key: string]: number[] };

function push(samples: Samples, key: string, value: number): void {
  (samples[key] ??= []).push(value);
}

async function machine() {
  const version = async (command: string, args: string[]) => {
    try {
      const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      return text.trim().split("\n")[0];
    } catch {
      return "absent";
    }
  };
  return {
    cores: navigator.hardwareConcurrency,
    memory_bytes: Deno.systemMemoryInfo().total,
    kernel: Deno.osRelease(),
    os: Deno.build.target,
    deno: Deno.version.deno,
    python: await version("python3", ["--version"]),
    node: await version("node", ["--version"]),
    podman: await version("podman", ["--version"]),
    wrk: await version("wrk", ["-v"]),
    go: await version("go", ["version"]),
  };
}

/** Runs the benchmark; returns the rows it reported. */
export async function bench(options: Options): Promise<Row[]> {
  const all = subjects({
    image: Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest",
    compiled: `${ROOT}shipshape`,
  });
  const chosen = options.only ? all.filter((s) => options.only!.includes(s.name)) : all;
  if (options.only && chosen.length !== options.only.length) {
    throw new Error(`--only: known subjects are ${all.map((s) => s.name).join(", ")}`);
  }
  for (const s of chosen) {
    if (s.skip || !s.prepare) continue;
    progress(`${s.name}: preparing (building its image)`);
    try {
      s.skip = await s.prepare();
    } catch (error) {
      s.skip = `${s.name}: ${error instanceof Error ? error.message.split("\n")[0] : error}`;
    }
  }
  for (const s of chosen) if (s.skip) progress(`skipping ${s.skip}`);
  const live = chosen.filter((s) => !s.skip);
  const samples = new Map<string, Samples>(live.map((s) => [s.name, {}]));
  const errors: { subject: string; figure: string; error: string }[] = [];

  async function attempt(subject: Subject, figure: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (error) {
      errors.push({ subject: subject.name, figure, error: String(error) });
      progress(`${subject.name}: ${figure} failed: ${error}`);
    }
  }

  for (const subject of live) {
    const s = samples.get(subject.name)!;
    if (subject.binaryBytes !== undefined) push(s, "binary", subject.binaryBytes);
    if (subject.image) {
      progress(`${subject.name}: image size (saving and compressing the image)`);
      await attempt(subject, "image", async () => {
        const sizes = await imageSizes(subject.image!);
        push(s, "image", sizes.bytes);
        push(s, "image_gzip", sizes.gzipBytes);
        const binary = await imageBinaryBytes(subject.image!);
        push(s, "binary", binary);
        push(s, IMAGE_OVERHEAD.key, sizes.bytes - binary);
      });
    }
  }

  for (let round = 1; round <= options.starts; round++) {
    for (const subject of live) {
      progress(`start/idle/stop: ${subject.name}, run ${round} of ${options.starts}`);
      await attempt(subject, "start", async () => {
        const s = samples.get(subject.name)!;
        const { running, readyMs } = await startReady(subject);
        push(s, "ready", readyMs);
        await sleep(500);
        push(s, "rss_idle", rssBytes(await running.pid()));
        const { stopMs, code } = await terminate(running);
        if (code !== 0) throw new Error(`exit code ${code} after an idle SIGTERM`);
        push(s, "stop", stopMs);
      });
    }
  }

  for (let round = 1; round <= options.drains; round++) {
    for (const subject of live) {
      progress(`stop with 10 in-flight 1 s requests: ${subject.name}, run ${round} of ${options.drains}`);
      await attempt(subject, "drain", async () => {
        const s = samples.get(subject.name)!;
        const { running } = await startReady(subject);
        const requests = Array.from({ length: 10 }, () => get(`http://127.0.0.1:${running.port}/delay/1`));
        await sleep(200);
        const { stopMs } = await terminate(running);
        const statuses = await Promise.all(requests);
        push(s, "drain_stop", stopMs);
        push(s, "drain_ok", statuses.filter((code) => code === 200).length);
      });
    }
  }

  for (let round = 1; round <= options.loadRounds; round++) {
    for (const subject of live) {
      for (const path of subject.routes ?? ["/readyz"]) {
        const suffix = ROUTES.find((r) => r.path === path)?.suffix ?? "";
        progress(
          `load on ${path} (${options.loadSeconds} s, 50 connections): ${subject.name}, run ${round} of ${options.loadRounds}`,
        );
        await attempt(subject, `load ${path}`, async () => {
          const s = samples.get(subject.name)!;
          const { running } = await startReady(subject);
          try {
            const url = `http://127.0.0.1:${running.port}${path}`;
            await runLoad(url, 1); // warm-up: JIT, connection setup
            const pid = await running.pid();
            const cpuBefore = cpuSeconds(pid);
            const result = await runLoad(url, options.loadSeconds);
            // The server's own CPU time per answered request: unlike req/s, not shared with the load generator.
            push(s, `cpu_request${suffix}`, ((cpuSeconds(pid) - cpuBefore) * 1e6) / result.requests);
            push(s, `rps${suffix}`, result.requestsPerSecond);
            push(s, `p99${suffix}`, result.p99Ms);
            push(s, `rss_load${suffix}`, rssBytes(pid));
            if (result.errors) progress(`${subject.name}: ${result.errors} errors under load on ${path}`);
            push(s, `load_errors${suffix}`, result.errors);
          } finally {
            await terminate(running);
          }
          push(s, `log_lines${suffix}`, running.lines());
        });
      }
    }
  }

  const rows: Row[] = chosen.map((subject) => ({
    name: subject.name,
    skip: subject.skip,
    figures: Object.fromEntries(
      Object.entries(samples.get(subject.name) ?? {}).map(([key, values]) => [key, summarize(values)]),
    ),
  }));
  const isContainer = new Set(chosen.filter((s) => s.image).map((s) => s.name));
  const targets = checkTargets(rows, {
    floor: GO_FLOOR,
    containers: ["shipshape container", "shipshape compiled container"],
    servers: ["shipshape", "shipshape compiled"],
  });
  const table = [
    markdown(rows.filter((r) => !isContainer.has(r.name))),
    `Containers (each \`podman run --rm --read-only --no-healthcheck -p 127.0.0.1:PORT:8080 IMAGE\`):\n`,
    containerMarkdown(rows.filter((r) => isContainer.has(r.name)), GO_FLOOR),
    `Throughput per route (x floor: to the same-response floor "${ROUTES[0].floor}"; x bare: to "${
      ROUTES[0].bare
    }"):\n`,
    routeMarkdown(rows.filter((r) => chosen.find((s) => s.name === r.name)?.routes)),
    "Targets (ratios in this run):\n",
    ...targets.map((t) => `- ${t.text}`),
  ].join("\n") + "\n";
  console.log(table);

  Deno.mkdirSync(options.out, { recursive: true });
  const result = {
    finished: new Date().toISOString(),
    mode: options.quick ? "quick" : "full",
    options,
    machine: await machine(),
    load_tool: haveWrk() ? "wrk" : "autocannon",
    subjects: chosen.map((s) => ({
      name: s.name,
      image: s.image,
      routes: s.routes ?? ["/readyz"],
      skipped: s.skip,
      samples: samples.get(s.name) ?? {},
    })),
    targets,
    errors,
  };
  // A quick run never overwrites the full run's files (those are the ones committed and shown in the README).
  const stem = `${options.out}/${options.quick ? "quick" : "latest"}`;
  Deno.writeTextFileSync(`${stem}.json`, JSON.stringify(result, null, 2) + "\n");
  Deno.writeTextFileSync(`${stem}.md`, table);
  const title = `shipshape benchmark (${result.mode}, ${result.machine.cores} cores, ${result.finished.slice(0, 10)})`;
  const figures = [...FIGURES, IMAGE_OVERHEAD, ...ROUTES.filter((r) => r.suffix).flatMap(routeFigures)];
  Deno.writeTextFileSync(`${stem}.svg`, chart(rows, title, figures));
  progress(`wrote ${stem}.json, .md and .svg`);
  if (errors.length) progress(`${errors.length} measurements failed: see "errors" in ${stem}.json`);
  return rows;
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.message : error}`);
    Deno.exit(2);
  }
  await bench(options);
}
