/** The servers the benchmark compares, and how each is started, probed for memory and stopped. */

import deno from "../deno.json" with { type: "json" };

const ROOT = new URL("../", import.meta.url).pathname;

/** A started server: its port, its process id (on this machine) and how it ends. */
export interface Running {
  port: number;
  /** The pid whose RSS counts (the server itself, also for a container). */
  pid(): Promise<number>;
  /** Lines its stdout carried (the log goes to a pipe that is read, as in a cluster); known once it exited. */
  lines(): number;
  /** Sends SIGTERM the way its platform does. */
  terminate(): Promise<void>;
  /** Resolves with the exit code once it has exited and its output is drained. */
  exited: Promise<number>;
  /** Ends it at once, whatever state it is in (cleanup). */
  kill(): Promise<void>;
}

/** One subject of the comparison. */
export interface Subject {
  name: string;
  /** Why it is not measured here; undefined when it is. */
  skip?: string;
  /** Size of the executable that runs the server, where that means something. */
  binaryBytes?: number;
  /** The container image, for container subjects. */
  image?: string;
  start(port: number): Running;
}

function fileSize(path: string): number | undefined {
  try {
    return Deno.statSync(path).size;
  } catch {
    return undefined;
  }
}

/** The real path of a command on PATH, or undefined when it is not installed. */
export function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const path = `${dir}/${name}`;
    if (fileSize(path) !== undefined) return Deno.realPathSync(path);
  }
  return undefined;
}

const READER = new URL("./reader.sh", import.meta.url).pathname;

/** A command started through bench/reader.sh: its pid, the reader's report ("lines", "matched", "exit"). */
export interface Spawned {
  child: Deno.ChildProcess;
  pid: Promise<number>;
  report: { [key: string]: number };
  stderr: string[];
  exited: Promise<number>;
}

/**
 * Starts `command` through bench/reader.sh, which pipes its stdout into a native reader (wc -l) and reports
 * the server's pid, then its line count and exit code.
 */
export function spawn(command: string, args: string[], env: { [key: string]: string }): Spawned {
  const child = new Deno.Command(READER, {
    args: [command, ...args],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const report: { [key: string]: number } = {};
  const { promise: pid, resolve: resolvePid } = Promise.withResolvers<number>();
  const stderr: string[] = [];
  const drained = Promise.all([
    (async () => {
      let pending = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        const parts = (pending + chunk).split("\n");
        pending = parts.pop() ?? "";
        for (const line of parts) {
          const [key, value] = line.split(" ");
          report[key] = Number(value);
          if (key === "pid") resolvePid(Number(value));
        }
      }
    })(),
    (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr.push(chunk);
    })(),
  ]);
  const exited = child.status.then(async () => {
    await drained;
    if (report.exit === undefined) throw new Error(`${command} ended without an exit report: ${stderr.join("")}`);
    return report.exit;
  });
  return { child, pid, report, stderr, exited };
}

/** A subject that is a plain process on this machine. */
function processSubject(name: string, command: string | undefined, args: string[], binaryBytes?: number): Subject {
  return {
    name,
    skip: command ? undefined : `${name}: its runtime is not installed`,
    binaryBytes,
    start(port) {
      const { child, pid, report, exited } = spawn(command!, args, { PORT: String(port), HOST: "127.0.0.1" });
      return {
        port,
        pid: () => pid,
        lines: () => report.lines,
        terminate: async () => Deno.kill(await pid, "SIGTERM"),
        exited,
        async kill() {
          try {
            Deno.kill(await pid, "SIGKILL");
          } catch { /* already gone */ }
          child.kill("SIGKILL");
          await exited.catch(() => {});
        },
      };
    },
  };
}

async function podman(...args: string[]): Promise<string> {
  const out = await new Deno.Command("podman", { args, stdin: "null" }).output();
  if (!out.success) throw new Error(`podman ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}

function podmanImageExists(image: string): boolean | undefined {
  try {
    return new Deno.Command("podman", { args: ["image", "exists", image], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return undefined; // no podman
  }
}

let containers = 0;

/** The image in a container: `podman run` in the foreground, so its stdout is the container's log. */
function containerSubject(image: string): Subject {
  const exists = podmanImageExists(image);
  return {
    name: "shipshape container",
    image,
    skip: exists === undefined
      ? "shipshape container: no container engine (podman) on this machine"
      : exists
      ? undefined
      : `shipshape container: image ${image} not built (deno task image)`,
    start(port) {
      const name = `shipshape-bench-${Deno.pid}-${++containers}`;
      const run = spawn("podman", [
        "run",
        "--rm",
        "--name",
        name,
        "--read-only",
        "--no-healthcheck",
        "-p",
        `127.0.0.1:${port}:8080`,
        image,
      ], { ...Deno.env.toObject() });
      return {
        port,
        pid: async () => Number(await podman("inspect", "--format", "{{.State.Pid}}", name)),
        lines: () => run.report.lines,
        terminate: () => podman("kill", "--signal", "TERM", name).then(() => {}),
        exited: run.exited,
        async kill() {
          await podman("rm", "--force", "--ignore", name).catch(() => {});
          await run.exited.catch(() => {});
        },
      };
    },
  };
}

/** The run flags of `deno task run`. */
const RUN_ARGS = deno.tasks.run.command.split(" ").slice(1);

/** Every subject, shipshape first (the reference of the ratios). */
export function subjects(options: { image: string; compiled: string }): Subject[] {
  const denoBin = Deno.execPath();
  const python = which("python3");
  const node = which("node");
  const compiledBytes = fileSize(options.compiled);
  return [
    processSubject("shipshape", denoBin, RUN_ARGS, fileSize(denoBin)),
    compiledBytes === undefined
      ? {
        name: "shipshape compiled",
        skip: `shipshape compiled: no ${options.compiled} (deno task compile needs a denort; none here)`,
        start: () => {
          throw new Error("skipped");
        },
      }
      : processSubject("shipshape compiled", options.compiled, [], compiledBytes),
    containerSubject(options.image),
    processSubject(
      "deno bare",
      denoBin,
      ["run", "--allow-net", "--allow-env=PORT", "bench/baselines/deno_bare.ts"],
      fileSize(denoBin),
    ),
    processSubject(
      "deno bare + request id",
      denoBin,
      ["run", "--allow-net", "--allow-env=PORT", "bench/baselines/deno_bare.ts", "request-id"],
      fileSize(denoBin),
    ),
    processSubject(
      "deno bare + contract",
      denoBin,
      ["run", "--allow-net", "--allow-env=PORT", "bench/baselines/deno_bare.ts", "contract"],
      fileSize(denoBin),
    ),
    // No binary size for Python: its interpreter is a small executable plus a standard library of many files.
    processSubject("python http.server", python, ["-u", "bench/baselines/python_server.py"]),
    processSubject("node http", node, ["bench/baselines/node_server.mjs"], node ? fileSize(node) : undefined),
  ];
}

/** Uncompressed and gzip-compressed size of an image, in bytes. */
export async function imageSizes(image: string): Promise<{ bytes: number; gzipBytes: number }> {
  const bytes = Number(await podman("image", "inspect", "--format", "{{.Size}}", image));
  const save = new Deno.Command("podman", {
    args: ["save", "--format", "docker-archive", image],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let gzipBytes = 0;
  for await (const chunk of save.stdout.pipeThrough(new CompressionStream("gzip"))) gzipBytes += chunk.length;
  await save.status;
  return { bytes, gzipBytes };
}
