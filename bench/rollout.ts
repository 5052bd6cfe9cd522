/**
 * `deno task rollout`: rolling updates under load through a real load balancer (HAProxy), shipshape beside the
 * servers people write without its care, in one run with one balancer configuration and one schedule. The
 * Deployment's strategy, readinessProbe, grace period and SHUTDOWN_* settings come from manifests/deployment.yaml.
 * Table on stdout, progress on stderr, table, raw counts and chart in bench/results/ (rollout.* for a full run,
 * rollout-quick.* for --quick).
 *
 * Options: --quick (under 2 minutes), --container (the image too), --cycles N, --replicas N, --mode l4|l7|both,
 * --only NAME[,NAME] (subjects by name), --scale X (times of the manifest multiplied by X), --rate N (requests
 * per second of the new-connection client), --connections N (of the keep-alive load), --out DIR.
 * Exit code: 0 when shipshape (process and container, with the manifest's delay) failed no request, lost no
 * access line and exited 0 every time; 1 otherwise or when HAProxy cannot be installed; 2 for a bad option.
 */

import { freePort, sleep } from "../testing.ts";
import { Balancer, type Mode } from "./haproxy.ts";
import { haveWrk, startLoad } from "./load.ts";
import { deploymentSettings, type RolloutSettings } from "./manifest.ts";
import { startNewConnectionClient } from "./new_connection_client.ts";
import { LOAD_PATH, type Replica, type RolloutSubject, rolloutSubjects } from "./replicas.ts";
import { chart, figureMarkdown, type Row, writeResults } from "./report.ts";
import { CHART_FIGURES, details, failed, type Outcome, ROLLOUT_FIGURES, row, tally } from "./tally.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** The rollout's options. */
export interface Options {
  quick: boolean;
  container: boolean;
  cycles: number;
  /** Replicas; undefined: the manifest's. */
  replicas?: number;
  modes: Mode[];
  only?: string[];
  scale: number;
  rate: number;
  connections: number;
  out: string;
}

const MODE_TITLES: { [mode in Mode]: string } = {
  l4: "Layer 4 (HAProxy mode tcp: a connection stays on the replica it was opened to, as kube-proxy's conntrack " +
    "keeps it)",
  l7: "Layer 7 (HAProxy mode http: every request is balanced, keep-alive on both sides)",
};

/** Parses the command line; throws with a one-line message naming the bad option. */
export function parseOptions(args: string[]): Options {
  const valued = ["--cycles", "--replicas", "--mode", "--only", "--scale", "--rate", "--connections", "--out"];
  const flags = ["--quick", "--container"];
  const values: { [name: string]: string } = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (flags.includes(arg)) continue;
    if (!valued.includes(arg)) throw new Error(`unknown option ${arg}`);
    if (i + 1 >= args.length || args[i + 1].startsWith("--")) throw new Error(`option ${arg} needs a value`);
    values[arg] = args[++i];
  }
  const quick = args.includes("--quick");
  const integer = (name: string, fallback: number | undefined, min = 1) => {
    if (values[name] === undefined) return fallback;
    const n = Number(values[name]);
    if (!/^\d+$/.test(values[name]) || n < min) {
      throw new Error(`option ${name} takes a whole number from ${min}, not ${values[name]}`);
    }
    return n;
  };
  const mode = values["--mode"] ?? "both";
  if (!["l4", "l7", "both"].includes(mode)) throw new Error(`option --mode takes l4, l7 or both, not ${mode}`);
  const scaleText = values["--scale"];
  const scale = scaleText === undefined ? (quick ? 0.25 : 1) : Number(scaleText);
  if (!/^(\d+(\.\d+)?|\.\d+)$/.test(scaleText ?? "1") || !(scale > 0) || scale > 10) {
    throw new Error(`option --scale takes a number above 0 up to 10, not ${scaleText}`);
  }
  return {
    quick,
    container: args.includes("--container"),
    cycles: integer("--cycles", quick ? 1 : 5)!,
    replicas: integer("--replicas", undefined),
    modes: mode === "both" ? ["l4", "l7"] : [mode as Mode],
    only: values["--only"]?.split(","),
    scale,
    rate: integer("--rate", 100)!,
    connections: integer("--connections", 16)!,
    out: values["--out"] ?? `${ROOT}bench/results`,
  };
}

function progress(message: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`rollout: ${message}\n`));
}

/** A replica known to the balancer. */
interface Member {
  name: string;
  replica: Replica;
}

/** Waits for a stopping replica's exit; after the grace period it is killed, as the kubelet does. */
async function awaitExit(replica: Replica, graceSeconds: number, outcome: Outcome): Promise<number> {
  const code = await exitWithin(replica, graceSeconds);
  if (code !== 0) (outcome.exitNotes ??= []).push(`exit ${code}: ${replica.stderr().trim().slice(-300)}`);
  return code;
}

async function exitWithin(replica: Replica, graceSeconds: number): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise<"grace">((resolve) =>
    timer = setTimeout(() => resolve("grace"), graceSeconds * 1000 + 2000)
  );
  const first = await Promise.race([replica.exited, grace]);
  clearTimeout(timer);
  if (first !== "grace") return first;
  await replica.kill();
  return await replica.exited.catch(() => -1);
}

/** One subject through `cycles` rollouts in one balancer mode, under both loads. */
async function runSubject(
  subject: RolloutSubject,
  mode: Mode,
  settings: RolloutSettings,
  options: Options,
  replicas: number,
): Promise<Outcome> {
  const outcome: Outcome = { subject: subject.name, mode, linesLogged: 0, cyclesMs: [], exits: [], finalExits: [] };
  const balancer = await Balancer.start(mode, freePort(), settings.probe);
  const live: Member[] = [];
  const all: Replica[] = [];
  let serial = 0;
  const upWithinMs = 60_000;
  async function startOne(): Promise<Member> {
    const name = `r${++serial}`;
    const port = freePort();
    const replica = subject.start(port);
    all.push(replica);
    // The endpoint controller lists the new pod; the balancer's readiness check decides when it gets traffic.
    await balancer.addServer(name, port);
    await balancer.waitUp(name, upWithinMs, replica.exited);
    return { name, replica };
  }
  async function stopOne(member: Member): Promise<number> {
    // Only the signal: the balancer's check takes the replica out of rotation when its readiness fails.
    await member.replica.terminate();
    const code = await awaitExit(member.replica, settings.graceSeconds, outcome);
    // Gone: the endpoint controller drops it from the list.
    await balancer.removeServer(member.name);
    outcome.linesLogged += member.replica.accessLines() ?? 0;
    return code;
  }
  let keepAlive: ReturnType<typeof startLoad> | undefined;
  let newConnection: ReturnType<typeof startNewConnectionClient> | undefined;
  try {
    for (let i = 0; i < replicas; i++) live.push(await startOne());
    keepAlive = startLoad(`http://127.0.0.1:${balancer.port}${LOAD_PATH}`, options.connections);
    newConnection = startNewConnectionClient(balancer.port, LOAD_PATH, options.rate);
    await sleep(options.quick ? 500 : 1000);
    const surge = Math.max(1, settings.maxSurge);
    for (let cycle = 1; cycle <= options.cycles; cycle++) {
      const started = performance.now();
      for (let replaced = 0; replaced < replicas;) {
        // maxSurge new replicas at a time, each ready before an old one goes (maxUnavailable 0).
        const batch = Math.min(surge, replicas - replaced);
        const fresh: Member[] = [];
        for (let i = 0; i < batch; i++) fresh.push(await startOne());
        const old = live.splice(0, batch);
        live.push(...fresh);
        outcome.exits.push(...await Promise.all(old.map(stopOne)));
        replaced += batch;
      }
      outcome.cyclesMs.push(performance.now() - started);
      progress(
        `${mode} ${subject.name}: cycle ${cycle}/${options.cycles} in ${
          ((performance.now() - started) / 1000).toFixed(1)
        } s`,
      );
    }
    await sleep(options.quick ? 500 : 1000);
  } catch (error) {
    outcome.error = error instanceof Error ? error.message : String(error);
    progress(`${mode} ${subject.name}: ${outcome.error}`);
  } finally {
    if (keepAlive) outcome.keepAlive = await keepAlive.stop().catch((e) => (outcome.error ??= String(e), undefined));
    if (newConnection) outcome.newConnection = await newConnection.stop();
    // The end of the run, not part of the rollout: the last replicas stop with no load.
    for (const member of live) {
      if (outcome.error) {
        await member.replica.kill();
        continue;
      }
      await member.replica.terminate();
      outcome.finalExits.push(await awaitExit(member.replica, settings.graceSeconds, outcome));
      outcome.linesLogged += member.replica.accessLines() ?? 0;
    }
    for (const replica of all) await replica.kill();
    await balancer.stop();
  }
  return outcome;
}

async function versionOf(command: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return text.trim().split("\n")[0];
  } catch {
    return "absent";
  }
}

/** The settings line of the report: what the manifest says and what this run used. */
export function describeSettings(s: RolloutSettings, replicas: number, options: Options, tool: string): string {
  const scaled = s.scale === 1 ? "the manifest's own times" : `the manifest's times x ${s.scale}`;
  return [
    `Deployment from manifests/deployment.yaml (${scaled}): ${replicas} replicas, maxSurge ${s.maxSurge}, ` +
    `maxUnavailable ${s.maxUnavailable}, readiness GET ${s.probe.path} every ${s.probe.periodMs} ms ` +
    `(failureThreshold ${s.probe.failureThreshold}, successThreshold ${s.probe.successThreshold}, timeout ` +
    `${s.probe.timeoutMs} ms), SHUTDOWN_DELAY ${s.shutdownDelayMs} ms, SHUTDOWN_TIMEOUT ${s.shutdownTimeoutMs} ms, ` +
    `grace period ${s.graceSeconds} s; ${options.cycles} cycle${
      options.cycles === 1 ? "" : "s"
    } (every replica replaced once a cycle).`,
    `Load through the balancer for the whole run: ${tool} with ${options.connections} keep-alive connections ` +
    `(closed loop: offered as fast as answered), and a client opening a new connection per request at ` +
    `${options.rate} requests/s offered. HAProxy: round robin, no retries, no redispatch.`,
  ].join("\n");
}

/** Runs the rollout comparison; returns the outcomes. */
export async function rollout(options: Options): Promise<Outcome[]> {
  const settings = deploymentSettings(options.scale);
  const replicas = options.replicas ?? settings.replicas;
  const image = Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest";
  const all = rolloutSubjects(settings, { container: options.container, image });
  const chosen = options.only ? all.filter((s) => options.only!.includes(s.name)) : all;
  if (options.only && chosen.length !== options.only.length) {
    throw new Error(`--only: known subjects are ${all.map((s) => s.name).join(", ")}`);
  }
  for (const s of chosen) if (s.skip) progress(`skipping ${s.skip}`);
  const tool = haveWrk() ? "wrk" : "autocannon";
  const outcomes: Outcome[] = [];
  const started = performance.now();
  for (const mode of options.modes) {
    for (const subject of chosen.filter((s) => !s.skip)) {
      progress(`${mode} ${subject.name}: ${replicas} replicas, ${options.cycles} cycles`);
      const o = await runSubject(subject, mode, settings, options, replicas);
      const t = tally(o);
      progress(
        `${mode} ${subject.name}: ${t.sent} sent, ${t.failed} failed, ${t.linesLost} lines lost, exits ${
          o.exits.join(" ")
        }`,
      );
      outcomes.push(o);
    }
  }
  const seconds = (performance.now() - started) / 1000;

  const sections: string[] = [describeSettings(settings, replicas, options, tool), ""];
  const chartRows: Row[] = [];
  for (const mode of options.modes) {
    const of = outcomes.filter((o) => o.mode === mode);
    const rows = of.map((o) => row(o, o.subject));
    chartRows.push(...of.map((o) => row(o, `${o.subject} ${mode}`)));
    sections.push(
      `### ${MODE_TITLES[mode]}`,
      "",
      figureMarkdown(
        [
          ...rows,
          ...chosen.filter((s) => s.skip).map((s) => ({ name: s.name, skip: s.skip, figures: {} })),
        ],
        ROLLOUT_FIGURES,
      ).trimEnd(),
      "",
      ...of.map((o) => details(o, o.subject)),
      "",
    );
  }
  sections.push(`Run took ${Math.round(seconds)} s.`);
  const table = sections.join("\n") + "\n";
  console.log(table);

  const stem = `${options.out}/${options.quick ? "rollout-quick" : "rollout"}`;
  const record = {
    finished: new Date().toISOString(),
    mode: options.quick ? "quick" : "full",
    options,
    settings,
    replicas,
    seconds,
    machine: {
      cores: navigator.hardwareConcurrency,
      kernel: Deno.osRelease(),
      deno: Deno.version.deno,
      haproxy: await versionOf("haproxy", ["-v"]),
      wrk: await versionOf("wrk", ["-v"]),
      node: await versionOf("node", ["--version"]),
      python: await versionOf("python3", ["--version"]),
      podman: options.container ? await versionOf("podman", ["--version"]) : undefined,
      image: options.container ? image : undefined,
    },
    load_tool: tool,
    outcomes: outcomes.map((o) => ({ ...o, tally: tally(o) })),
  };
  const cycles = `${options.cycles} cycle${options.cycles === 1 ? "" : "s"}`;
  const date = record.finished.slice(0, 10);
  const title = `shipshape rollout (${record.mode}, ${cycles} of ${replicas} replicas, scale ${options.scale}, ` +
    `${record.machine.cores} cores, ${date})`;
  writeResults(stem, record, table, chart(chartRows, title, CHART_FIGURES));
  progress(`wrote ${stem}.json, .md and .svg`);
  return outcomes;
}

/** Runs a setup script of tools/ with its messages on stderr; false when it failed. */
async function setup(script: string): Promise<boolean> {
  const out = await new Deno.Command("bash", { args: [script], cwd: ROOT, stdout: "inherit", stderr: "inherit" })
    .output();
  return out.success;
}

/** Sources tools/engine.sh (podman and its CONTAINERS_CONF) and builds the image from this checkout. */
async function containerSetup(): Promise<boolean> {
  const out = await new Deno.Command("bash", {
    args: ["-c", '. tools/engine.sh && printf "%s" "${CONTAINERS_CONF:-}"'],
    cwd: ROOT,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) return false;
  const conf = new TextDecoder().decode(out.stdout);
  if (conf) Deno.env.set("CONTAINERS_CONF", conf);
  return setup("tools/fresh_image.sh");
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    console.error(`rollout: ${error instanceof Error ? error.message : error}`);
    Deno.exit(2);
  }
  if (!await setup("tools/haproxy.sh")) Deno.exit(1);
  if (options.container && !await containerSetup()) {
    console.error(
      "rollout: --container needs podman and the image: tools/engine.sh or tools/fresh_image.sh failed (above)",
    );
    Deno.exit(1);
  }
  let outcomes: Outcome[];
  try {
    outcomes = await rollout(options);
  } catch (error) {
    console.error(`rollout: ${error instanceof Error ? error.message : error}`);
    Deno.exit(error instanceof Error && error.message.startsWith("--only") ? 2 : 1);
  }
  const claim = outcomes.filter((o) => o.subject === "shipshape" || o.subject === "shipshape container");
  Deno.exit(claim.some(failed) ? 1 : 0);
}
