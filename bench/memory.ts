/**
 * `deno task memory`: what each kind of connection costs the server in memory, and whether it comes back.
 *
 * For each kind (bench/flood.ts: idle keep-alive, half-open header, in-flight /delay/10) it opens N connections,
 * reads the memory, closes them, and reads it again once the server has let go. Two subjects: the process
 * (RSS from /proc, split into anonymous and file-backed pages) and the image in a container at the manifest's
 * memory limit (the cgroup's charge, what the OOM killer compares with the limit). Last, in the container,
 * half-open header connections are added until /livez stops answering or the container dies: how many fit.
 * Table on stdout, progress on stderr, raw figures in bench/results/memory.json and the table in memory.md.
 *
 * Options: --connections N (per kind, default 2000), --rounds N (default 3), --only process|container,
 * --no-fill (skip the half-open fill), --out DIR.
 */

import YAML from "yaml";
import { Flood, type Kind, KINDS } from "./flood.ts";
import { summarize, type Summary } from "./stats.ts";
import { freePort, getFresh, ServerProcess, sleep } from "../testing.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MIB = 1024 * 1024;

/** Memory of a server at one moment, in bytes. */
export interface Memory {
  /** Resident set of the server process (VmRSS). */
  rss: number;
  /** Its anonymous part (heap, stacks): what connections grow. */
  anon: number;
  /** Its file-backed part (the mapped deno binary and libraries). */
  file: number;
  /** What the container's memory cgroup is charged (memory.usage_in_bytes), for a container. */
  cgroup?: number;
}

function statusKb(status: string, field: string): number {
  const kb = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  if (!kb) throw new Error(`No ${field} in /proc status`);
  return Number(kb[1]) * 1024;
}

/** Reads a process's memory from /proc, and its container's cgroup charge when `cgroup` names the directory. */
export function memoryOf(pid: number, cgroup?: string): Memory {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const memory: Memory = {
    rss: statusKb(status, "VmRSS"),
    anon: statusKb(status, "RssAnon"),
    file: statusKb(status, "RssFile"),
  };
  if (cgroup) memory.cgroup = cgroupCharge(cgroup);
  return memory;
}

/** The memory a cgroup is charged: cgroup v2 memory.current, or v1 memory.usage_in_bytes. */
export function cgroupCharge(dir: string): number {
  for (const file of ["memory.current", "memory.usage_in_bytes"]) {
    try {
      return Number(Deno.readTextFileSync(`${dir}/${file}`).trim());
    } catch { /* the other cgroup version */ }
  }
  throw new Error(`No memory.current or memory.usage_in_bytes in ${dir}`);
}

/** Bytes of a Kubernetes memory quantity: 128Mi, 1Gi, 500M, 134217728. */
export function quantityBytes(quantity: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(quantity.trim());
  if (!m) throw new Error(`Not a memory quantity: ${quantity}`);
  const scale: { [unit: string]: number } = { Ki: 1024, Mi: MIB, Gi: 1024 * MIB, k: 1e3, M: 1e6, G: 1e9 };
  return Math.round(Number(m[1]) * (m[2] ? scale[m[2]] : 1));
}

/** The server container of manifests/deployment.yaml: its resources, probes and env, as written. */
// deno-lint-ignore no-explicit-any
export function manifestContainer(): any {
  const deployment = YAML.parse(Deno.readTextFileSync(`${ROOT}manifests/deployment.yaml`));
  return deployment.spec.template.spec.containers[0];
}

async function podman(...args: string[]): Promise<string> {
  // Not in the worktree: on an OOM kill, conmon leaves a file named "oom" in its working directory.
  const cwd = Deno.env.get("TMPDIR") ?? "/tmp";
  const out = await new Deno.Command("podman", { args, cwd, stdin: "null", stdout: "piped", stderr: "piped" }).output()
    .catch((error) => {
      throw new Error(`podman is needed (tools/memory.sh or deno task test set it up): ${error}`);
    });
  if (!out.success) throw new Error(`podman ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** The image in a detached container with a memory limit, as a pod with `limits.memory` runs it. */
export class LimitedContainer {
  readonly name: string;
  readonly port: number;
  pid = 0;
  cgroup = "";

  private constructor(name: string, port: number) {
    this.name = name;
    this.port = port;
  }

  /** Starts `image` with `--memory limitBytes` and `env`, and waits for /readyz to answer 200. */
  static async start(image: string, limitBytes: number, env: { [name: string]: string }): Promise<LimitedContainer> {
    const container = new LimitedContainer(`shipshape-memory-${Deno.pid}-${Date.now()}`, freePort());
    const envArgs = Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`]);
    await podman(
      "run",
      "--detach",
      "--name",
      container.name,
      "--read-only",
      "--no-healthcheck",
      "--memory",
      String(limitBytes),
      "--memory-swap",
      String(limitBytes),
      "--publish",
      `127.0.0.1:${container.port}:8080`,
      ...envArgs,
      image,
    );
    try {
      container.pid = Number(await podman("inspect", "--format", "{{.State.Pid}}", container.name));
      const line = Deno.readTextFileSync(`/proc/${container.pid}/cgroup`).split("\n")
        .map((l) => l.split(":")).find(([, controllers]) => controllers === "memory" || controllers === "");
      const v1 = `/sys/fs/cgroup/memory${line?.[2]}`;
      container.cgroup = line?.[1] === "memory" ? v1 : `/sys/fs/cgroup${line?.[2]}`;
      const deadline = Date.now() + 30_000;
      while ((await getFresh(container.url("/readyz")).catch(() => ({ status: 0 }))).status !== 200) {
        if (Date.now() > deadline) throw new Error(`${image} did not answer /readyz within 30 s`);
        await sleep(50);
      }
    } catch (error) {
      await container.remove();
      throw error;
    }
    return container;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** The memory of the server process and the container's cgroup charge. */
  memory(): Memory {
    return memoryOf(this.pid, this.cgroup);
  }

  /** The engine's view of the container: running, exit code, whether the OOM killer ended it. */
  async state(): Promise<{ running: boolean; exitCode: number; oomKilled: boolean }> {
    const state = JSON.parse(await podman("inspect", "--format", "{{json .State}}", this.name));
    return { running: state.Running, exitCode: state.ExitCode, oomKilled: state.OOMKilled };
  }

  /** The container's log lines. */
  async logs(): Promise<string[]> {
    return (await podman("logs", this.name)).split("\n").filter((l) => l);
  }

  /** Stops it with SIGTERM (podman's 10 s before SIGKILL); its exit code. */
  async stop(): Promise<number> {
    await podman("stop", "--time", "10", this.name);
    return (await this.state()).exitCode;
  }

  /** Removes it, whatever state it is in. */
  async remove(): Promise<void> {
    await podman("rm", "--force", "--ignore", this.name).catch(() => {});
  }
}

/** One flood of one kind: memory before, with the connections open, at its peak, and after they closed. */
interface FloodRun {
  connections: number;
  failed: number;
  before: Memory;
  during: Memory;
  /** The highest reading (each field on its own) from opening to the after reading, sampled every 100 ms. */
  peak: Memory;
  after: Memory;
}

/** One kind on a fresh server: its idle memory, a first flood, then the same flood again. */
interface KindRun {
  kind: Kind;
  idle: Memory;
  first: FloodRun;
  /** The repeat: memory that did not come back after the first is reused when this peak is no higher. */
  second: FloodRun;
  /** LATE_MS after the repeat's after reading: what the server gives back once its garbage collector ran. */
  late: Memory;
}

/** How long after the last flood the late reading waits (V8 gave memory back 15-20 s after a flood here). */
const LATE_MS = 30_000;

/** Reads memory every 100 ms until stopped; keeps each field's maximum. */
function peakSampler(read: () => Memory): { stop(): Promise<Memory> } {
  const peak = read();
  let running = true;
  const done = (async () => {
    while (running) {
      await sleep(100);
      let now: Memory;
      try {
        now = read();
      } catch {
        return; // the server is gone: the flood's own reading fails and says so
      }
      for (const key of Object.keys(now) as (keyof Memory)[]) peak[key] = Math.max(peak[key] ?? 0, now[key] ?? 0);
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return peak;
    },
  };
}

function progress(message: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`memory: ${message}\n`));
}

/** After the clients left: long enough for /delay/10 timers to fire and the server to free what it held. */
const SETTLE_AFTER_MS: { [kind in Kind]: number } = { idle: 3000, header: 3000, inflight: 12_000 };

function mb(bytes: number | undefined): string {
  return bytes === undefined ? "-" : (bytes / MIB).toFixed(1);
}

/** Opens `connections` of `kind`, reads memory while they are open, closes them, reads it once the server let go. */
async function floodOnce(port: number, read: () => Memory, kind: Kind, connections: number): Promise<FloodRun> {
  const before = read();
  const sampler = peakSampler(read);
  try {
    return await floodWhileSampled(port, read, kind, connections, before, sampler);
  } finally {
    await sampler.stop();
  }
}

async function floodWhileSampled(
  port: number,
  read: () => Memory,
  kind: Kind,
  connections: number,
  before: Memory,
  sampler: { stop(): Promise<Memory> },
): Promise<FloodRun> {
  const started = performance.now();
  const flood = await Flood.open(port, kind, connections);
  await sleep(kind === "inflight" ? 500 : 1000);
  const during = read();
  if (kind === "inflight" && performance.now() - started > 9000) {
    throw new Error(`Opening ${connections} in-flight requests took over 9 s: some ended before the reading`);
  }
  const bad = kind === "idle" ? flood.opened.filter((h) => h.status !== 200).length : 0;
  if (bad) throw new Error(`${bad} idle connections got no 200 on their first request`);
  const failed = flood.failed;
  flood.close();
  await sleep(SETTLE_AFTER_MS[kind]);
  const after = read();
  const peak = await sampler.stop();
  const fields = (["rss", "cgroup"] as (keyof Memory)[]).filter((f) => before[f] !== undefined);
  progress(
    `${kind}: ${connections} open (${failed} failed): ` +
      fields.map((f) => `${f} ${mb(before[f])} -> ${mb(during[f])} (peak ${mb(peak[f])}) -> ${mb(after[f])}`)
        .join(", ") +
      " MiB",
  );
  return { connections, failed, before, during, peak, after };
}

/** A server started for one kind: its port, how to read its memory, how to stop it. */
interface Started {
  port: number;
  read: () => Memory;
  stop(): Promise<void>;
}

/** Measures one kind on a server just started: its idle memory, a flood, and the same flood again. */
async function measureKind(kind: Kind, connections: number, start: () => Promise<Started>): Promise<KindRun> {
  const server = await start();
  try {
    await getFresh(`http://127.0.0.1:${server.port}/livez`);
    await sleep(500);
    const idle = server.read();
    const first = await floodOnce(server.port, server.read, kind, connections);
    const second = await floodOnce(server.port, server.read, kind, connections);
    await sleep(LATE_MS);
    const late = server.read();
    progress(
      `${kind}: ${LATE_MS / 1000} s later: ${
        ["rss", "cgroup"].map((f) => `${f} ${mb(late[f as keyof Memory])}`).join(", ")
      } MiB`,
    );
    return { kind, idle, first, second, late };
  } finally {
    await server.stop();
  }
}

/**
 * Adds half-open header connections `step` at a time while /livez answers within `probeMs`, until `max` or the
 * container dies. The most that were open with /livez still answering, and the memory then.
 */
async function fillHeaders(
  container: LimitedContainer,
  step: number,
  max: number,
  probeMs: number,
): Promise<{ fitted: number; memory?: Memory; end: string }> {
  const floods: Flood[] = [];
  let fitted = 0;
  let memory: Memory | undefined;
  let end = `reached ${max}`;
  try {
    while (fitted < max) {
      const flood = await Flood.open(container.port, "header", step);
      floods.push(flood);
      const open = floods.reduce((n, f) => n + f.conns.length, 0);
      const probe = getFresh(container.url("/livez")).then((r) => r.status, () => 0);
      const status = await Promise.race([probe, sleep(probeMs).then(() => -1)]);
      const state = await container.state();
      if (!state.running) {
        end = `container ended at ${open} (exit ${state.exitCode}, OOM-killed: ${state.oomKilled})`;
        break;
      }
      if (status !== 200) {
        end = `/livez ${status === -1 ? `unanswered within ${probeMs} ms` : `answered ${status}`} at ${open}`;
        break;
      }
      fitted = open;
      memory = container.memory();
      progress(`fill: ${open} half-open header connections, cgroup ${(memory.cgroup! / MIB).toFixed(1)} MiB`);
    }
  } finally {
    for (const flood of floods) flood.close();
  }
  return { fitted, memory, end };
}

interface Options {
  connections: number;
  rounds: number;
  only?: string;
  fill: boolean;
  out: string;
}

function parseOptions(args: string[]): Options {
  const options: Options = { connections: 2000, rounds: 3, fill: true, out: `${ROOT}bench/results` };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--connections") options.connections = Number(args[++i]);
    else if (arg === "--rounds") options.rounds = Number(args[++i]);
    else if (arg === "--only") options.only = args[++i];
    else if (arg === "--no-fill") options.fill = false;
    else if (arg === "--out") options.out = args[++i];
    else throw new Error(`Unknown option ${arg} (expected --connections N, --rounds N, --only S, --no-fill, --out D)`);
  }
  if (!(options.connections >= 1) || !(options.rounds >= 1)) throw new Error("--connections and --rounds take N >= 1");
  if (options.only && !["process", "container"].includes(options.only)) {
    throw new Error(`--only takes process or container, not ${options.only}`);
  }
  return options;
}

function kib(bytes: number | undefined): string {
  return bytes === undefined ? "-" : (bytes / 1024).toFixed(1);
}

function mib(summary: Summary | undefined): string {
  return summary === undefined ? "-" : `${(summary.median / MIB).toFixed(1)}`;
}

/** Runs one measurement; a failure (the server gone, say) is reported and recorded, and the run goes on. */
async function attempt(what: string, failures: string[], run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (error) {
    const message = `${what} failed: ${error instanceof Error ? error.message : error}`;
    progress(message);
    failures.push(message);
  }
}

/** Per-connection cost in bytes of a flood: the growth (while open, or to the peak), divided by the connections. */
function perConnection(run: FloodRun, field: keyof Memory, at: "during" | "peak"): number {
  return ((run[at][field] ?? 0) - (run.before[field] ?? 0)) / run.connections;
}

/** The table: per subject, figure and kind, the cost per connection and the memory through two floods (medians). */
function table(results: { subject: string; field: keyof Memory; runs: KindRun[] }[]): string {
  const lines = [
    "| subject (figure) | kind | N | KiB/conn open (min-max) | KiB/conn to peak | MiB idle | MiB open | " +
    "MiB peak | MiB after close | MiB peak, again | MiB after, again | MiB 30 s later |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const { subject, field, runs } of results) {
    for (const kind of ["idle", "header", "inflight"] as Kind[]) {
      const of = runs.filter((r) => r.kind === kind);
      if (!of.length) continue;
      const cost = summarize(of.map((r) => perConnection(r.first, field, "during")))!;
      const toPeak = summarize(of.map((r) => perConnection(r.first, field, "peak")))!;
      const at = (pick: (r: KindRun) => Memory) => mib(summarize(of.map((r) => pick(r)[field] ?? 0)));
      const cells = [
        `${subject} (${field})`,
        kind,
        of[0].first.connections,
        `${kib(cost.median)} (${kib(cost.min)}-${kib(cost.max)})`,
        kib(toPeak.median),
        at((r) => r.idle),
        at((r) => r.first.during),
        at((r) => r.first.peak),
        at((r) => r.first.after),
        at((r) => r.second.peak),
        at((r) => r.second.after),
        at((r) => r.late),
      ];
      lines.push(`| ${cells.join(" | ")} |`);
    }
  }
  return lines.join("\n") + "\n";
}

async function main(args: string[]): Promise<void> {
  const options = parseOptions(args);
  const image = Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest";
  const container = manifestContainer();
  const limit = quantityBytes(container.resources.limits.memory);
  // Never the server's own limit in the way: every kind is measured unbounded.
  const env = { MAX_IN_FLIGHT: String(options.connections * 10), SHUTDOWN_DELAY: "0", LOG_LEVEL: "info" };
  const results: { subject: string; field: keyof Memory; runs: KindRun[] }[] = [];
  const raw: { [key: string]: unknown } = { connections: options.connections, limit_bytes: limit, image };
  const kinds: Kind[] = ["idle", "header", "inflight"];
  const failures: string[] = [];
  raw.failures = failures;

  if (options.only !== "container") {
    const runs: KindRun[] = [];
    for (let round = 1; round <= options.rounds; round++) {
      for (const kind of kinds) {
        progress(`process, round ${round}/${options.rounds}, ${kind}`);
        await attempt(`process ${kind} round ${round}`, failures, async () => {
          runs.push(
            await measureKind(kind, options.connections, async () => {
              const server = await ServerProcess.start(env);
              return {
                port: server.port,
                read: () => memoryOf(server.pid),
                async stop() {
                  server.kill("SIGTERM");
                  await server.exit();
                },
              };
            }),
          );
        });
      }
    }
    results.push({ subject: "process", field: "rss", runs }, { subject: "process", field: "anon", runs });
    raw.process = runs;
  }

  if (options.only !== "process") {
    const runs: KindRun[] = [];
    for (let round = 1; round <= options.rounds; round++) {
      for (const kind of kinds) {
        progress(`container at --memory ${limit / MIB} MiB, round ${round}/${options.rounds}, ${kind}`);
        let state = {};
        await attempt(`container ${kind} round ${round}`, failures, async () => {
          try {
            runs.push(
              await measureKind(kind, options.connections, async () => {
                const c = await LimitedContainer.start(image, limit, env);
                return {
                  port: c.port,
                  read: () => c.memory(),
                  async stop() {
                    state = await c.state();
                    await c.remove();
                  },
                };
              }),
            );
          } catch (error) {
            throw new Error(
              `${error instanceof Error ? error.message : error}; container state ${JSON.stringify(state)}`,
            );
          }
        });
      }
    }
    results.push({ subject: "container", field: "cgroup", runs }, { subject: "container", field: "rss", runs });
    raw.container = runs;
    if (options.fill) {
      progress(`container at --memory ${limit / MIB} MiB: half-open header connections until /livez fails`);
      await attempt("half-open fill", failures, async () => {
        const c = await LimitedContainer.start(image, limit, env);
        try {
          const probeMs = container.livenessProbe.timeoutSeconds * 1000;
          raw.fill = { ...await fillHeaders(c, 500, 18_000, probeMs), probe_ms: probeMs, final: await c.state() };
        } finally {
          await c.remove();
        }
      });
    }
  }

  const text = table(results);
  console.log(text);
  if (raw.fill) console.log("half-open header fill:", JSON.stringify(raw.fill));
  if (failures.length) console.log(`failed measurements (left out of the table):\n${failures.join("\n")}`);
  Deno.mkdirSync(options.out, { recursive: true });
  Deno.writeTextFileSync(`${options.out}/memory.json`, JSON.stringify(raw, null, 2) + "\n");
  const descriptions = kinds.map((k) => `- ${k}: ${KINDS[k].description}`).join("\n");
  const failed = failures.length
    ? `\nFailed measurements (left out of the table):\n\n${failures.map((f) => `- ${f}`).join("\n")}\n`
    : "";
  const fill = raw.fill ? `\nHalf-open header fill at the limit: ${JSON.stringify(raw.fill)}\n` : "";
  Deno.writeTextFileSync(`${options.out}/memory.md`, `${text}\n${descriptions}\n${fill}${failed}`);
}

if (import.meta.main) await main(Deno.args);
