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
import { FIGURES, markdown, type Row, svg } from "./report.ts";
import { summarize } from "./stats.ts";
import { cpuSeconds, freePort, getFresh, rssBytes, sleep } from "../testing.ts";
import { imageSizes, type Running, type Subject, subjects } from "./subjects.ts";

const ROOT = new URL("../", import.meta.url).pathname;

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
    starts: runs ?? (quick ? 3 : 7),
    drains: runs ?? (quick ? 1 : 3),
    loadRounds: runs ?? (quick ? 1 : 5),
    loadSeconds: seconds ?? (quick ? 3 : 10),
  };
}

function progress(message: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`bench: ${message}\n`));
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
      progress(
        `load (${options.loadSeconds} s, 50 connections): ${subject.name}, run ${round} of ${options.loadRounds}`,
      );
      await attempt(subject, "load", async () => {
        const s = samples.get(subject.name)!;
        const { running } = await startReady(subject);
        try {
          const url = `http://127.0.0.1:${running.port}/readyz`;
          await runLoad(url, 1); // warm-up: JIT, connection setup
          const pid = await running.pid();
          const cpuBefore = cpuSeconds(pid);
          const result = await runLoad(url, options.loadSeconds);
          // The server's own CPU time per answered request: unlike req/s, not shared with the load generator.
          push(s, "cpu_request", ((cpuSeconds(pid) - cpuBefore) * 1e6) / result.requests);
          push(s, "rps", result.requestsPerSecond);
          push(s, "p99", result.p99Ms);
          push(s, "rss_load", rssBytes(pid));
          if (result.errors) progress(`${subject.name}: ${result.errors} errors under load`);
          push(s, "load_errors", result.errors);
        } finally {
          await terminate(running);
        }
        push(s, "log_lines", running.lines());
      });
    }
  }

  const rows: Row[] = chosen.map((subject) => ({
    name: subject.name,
    skip: subject.skip,
    figures: Object.fromEntries(
      FIGURES.map((f) => [f.key, summarize(samples.get(subject.name)?.[f.key] ?? [])]),
    ),
  }));
  const table = markdown(rows);
  console.log(table);

  Deno.mkdirSync(options.out, { recursive: true });
  const result = {
    finished: new Date().toISOString(),
    mode: options.quick ? "quick" : "full",
    options,
    machine: await machine(),
    load_tool: haveWrk() ? "wrk" : "autocannon",
    subjects: chosen.map((s) => ({ name: s.name, skipped: s.skip, samples: samples.get(s.name) ?? {} })),
    errors,
  };
  // A quick run never overwrites the full run's files (those are the ones committed and shown in the README).
  const stem = `${options.out}/${options.quick ? "quick" : "latest"}`;
  Deno.writeTextFileSync(`${stem}.json`, JSON.stringify(result, null, 2) + "\n");
  Deno.writeTextFileSync(`${stem}.md`, table);
  const title = `shipshape benchmark (${result.mode}, ${result.machine.cores} cores, ${result.finished.slice(0, 10)})`;
  Deno.writeTextFileSync(`${stem}.svg`, svg(rows, title));
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
