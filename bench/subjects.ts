/** The servers the benchmark compares, and how each is started, probed for memory and stopped. */

import { RUN_ARGS } from "../testing.ts";
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
  /** The container image, for container subjects (prepare() may settle it). */
  image?: string;
  /** Routes its throughput is measured on; /readyz when unset. */
  routes?: string[];
  /**
   * Makes it ready to measure (builds its image); resolves with a reason to skip it, or undefined. Called once by
   * the benchmark, only for the subjects it measures.
   */
  prepare?(): Promise<string | undefined>;
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
function processSubject(
  name: string,
  command: string | undefined,
  args: string[],
  binaryBytes?: number,
  env: { [key: string]: string } = {},
): Subject {
  return {
    name,
    skip: command ? undefined : `${name}: its runtime is not installed`,
    binaryBytes,
    start(port) {
      const { child, pid, report, exited } = spawn(command!, args, { ...env, PORT: String(port), HOST: "127.0.0.1" });
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
function containerSubject(image: string, name = "shipshape container"): Subject {
  const exists = podmanImageExists(image);
  const subject: Subject = {
    name,
    image,
    skip: exists === undefined
      ? `${name}: no container engine (podman) on this machine`
      : exists
      ? undefined
      : `${name}: image ${image} not built (deno task image)`,
    start(port) {
      const image = subject.image!;
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
  return subject;
}

/** The routes loaded on shipshape and on the Deno servers beside it (the others: /readyz alone). */
const ROUTES = ["/readyz", "/"];

/** deno_bare.ts's flags and argument for one mode (its page names the version shipshape's does). */
function bareArgs(mode: string): string[] {
  return ["run", "--allow-net", "--allow-env=PORT,HOST,VERSION", "--allow-sys=hostname", BARE_SCRIPT, mode];
}
const BARE_SCRIPT = "bench/baselines/deno_bare.ts";
const BARE_ENV = { VERSION: deno.version };

/** Every subject, shipshape first (the reference of the ratios). */
export function subjects(options: { image: string; compiled: string }): Subject[] {
  const denoBin = Deno.execPath();
  const python = which("python3");
  const node = which("node");
  const compiledBytes = fileSize(options.compiled);
  return [
    { ...processSubject("shipshape", denoBin, RUN_ARGS, fileSize(denoBin)), routes: ROUTES },
    compiledBytes === undefined
      ? {
        name: "shipshape compiled",
        skip: `shipshape compiled: no ${options.compiled} (deno task compile needs a denort; none here)`,
        start: () => {
          throw new Error("skipped");
        },
      }
      : { ...processSubject("shipshape compiled", options.compiled, [], compiledBytes), routes: ROUTES },
    runtimeContainer(options.image),
    ...floorSubjects(options.image),
    { ...processSubject("deno bare", denoBin, bareArgs("bare"), fileSize(denoBin), BARE_ENV), routes: ROUTES },
    processSubject("deno bare + request id", denoBin, bareArgs("request-id"), fileSize(denoBin), BARE_ENV),
    {
      ...processSubject("deno bare + contract", denoBin, bareArgs("contract"), fileSize(denoBin), BARE_ENV),
      routes: ROUTES,
    },
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

/** Size in bytes of the file an image runs (the first word of its entrypoint), read from a container of it. */
export async function imageBinaryBytes(image: string): Promise<number> {
  const entrypoint: string[] = JSON.parse(
    await podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image),
  );
  if (!entrypoint?.length) throw new Error(`Image ${image} has no entrypoint`);
  const container = await podman("create", "--quiet", "--no-healthcheck", image);
  try {
    const copy = new Deno.Command("podman", {
      args: ["cp", `${container}:${entrypoint[0]}`, "-"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    // A tar stream: the first header carries the file's size (octal, 12 bytes at offset 124).
    const reader = copy.stdout.getReader();
    const head = new Uint8Array(512);
    let filled = 0;
    while (filled < 512) {
      const { value, done } = await reader.read();
      if (done) break;
      const take = Math.min(value.length, 512 - filled);
      head.set(value.subarray(0, take), filled);
      filled += take;
    }
    await reader.cancel();
    await copy.status;
    if (filled < 512) throw new Error(`podman cp ${image}:${entrypoint[0]} gave no tar header`);
    const type = String.fromCharCode(head[156]);
    if (type !== "0" && type !== "\0") {
      throw new Error(`${entrypoint[0]} in ${image} is not a plain file (tar type ${type})`);
    }
    return parseInt(new TextDecoder().decode(head.subarray(124, 136)).replace(/\0.*$/, "").trim(), 8);
  } finally {
    await podman("rm", "--force", "--ignore", container).catch(() => {});
  }
}

/** "compiled" when the image runs the single executable (/shipshape), else "runtime". */
async function imageTarget(image: string): Promise<"compiled" | "runtime"> {
  const entrypoint = JSON.parse(await podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image));
  return entrypoint?.[0] === "/shipshape" ? "compiled" : "runtime";
}

/** The tag of the other target beside `image`: localhost/shipshape:x -> localhost/shipshape:x-runtime. */
export function targetTag(image: string, target: string): string {
  const slash = image.lastIndexOf("/");
  return image.slice(slash + 1).includes(":") ? `${image}-${target}` : `${image}:latest-${target}`;
}

/** Runs a command with the environment plus `env`; resolves with undefined, or its last stderr line on failure. */
async function run(command: string, args: string[], env: { [key: string]: string } = {}): Promise<string | undefined> {
  const out = await new Deno.Command(command, { args, cwd: ROOT, env, stdin: "null", stdout: "null", stderr: "piped" })
    .output();
  if (out.success) return undefined;
  const lines = new TextDecoder().decode(out.stderr).trim().split("\n");
  return lines.at(-1) || `${command} exited with ${out.code}`;
}

/** Whether `deno compile` can get its denort here: DENORT_BIN, or dl.deno.land resolves (as tools/image.sh asks). */
function denortAvailable(): boolean {
  if (Deno.env.get("DENORT_BIN")) return true;
  try {
    return new Deno.Command("getent", { args: ["hosts", "dl.deno.land"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

/**
 * Whether the images are taken as they are (SHIPSHAPE_IMAGE_PREBUILT, as for tools/test.sh: CI builds them with
 * podman build). Otherwise every run rebuilds them from the checkout (the layer cache makes that quick), so a row
 * never measures an image of older code.
 */
function prebuilt(image: string): boolean {
  return Boolean(Deno.env.get("SHIPSHAPE_IMAGE_PREBUILT")) && podmanImageExists(image) === true;
}

/**
 * "shipshape container": the image SHIPSHAPE_IMAGE names, as before; its prepare() makes it the runtime target
 * (that image when it is one, else its `-runtime` tag beside it, built by tools/image.sh unless prebuilt).
 */
function runtimeContainer(image: string): Subject {
  const subject = containerSubject(image);
  if (subject.skip) return subject;
  subject.prepare = async () => {
    if (await imageTarget(image) === "runtime") return undefined;
    subject.image = targetTag(image, "runtime");
    if (prebuilt(subject.image)) return undefined;
    const failed = await run("bash", ["tools/image.sh", "--target", "runtime"], { SHIPSHAPE_IMAGE: subject.image });
    return failed && `shipshape container: tools/image.sh --target runtime failed: ${failed}`;
  };
  return subject;
}

/** The local base images tools/image.sh builds; without them, the registry images the Containerfile names. */
const LOCAL_BASE = "localhost/shipshape-base:debian12";
const LOCAL_DENO = `localhost/deno:${Deno.version.deno}`;

/** The image of the Go floor (tools/go_image.sh) and of the bare Deno server (bench/baselines/deno_bare.Containerfile). */
export const FLOOR_IMAGES = {
  go: "localhost/shipshape-bench-go:latest",
  denoBare: `localhost/shipshape-bench-deno-bare:${Deno.version.deno}`,
};

/**
 * The container rows beside "shipshape container" (whose prepare() makes it the runtime target): the compiled
 * target, the bare Deno server on the same base, and the Go scratch floor. Each builds its image in prepare().
 */
export function floorSubjects(image: string): Subject[] {
  const compiled = containerSubject(targetTag(image, "compiled"), "shipshape compiled container");
  const bare = containerSubject(FLOOR_IMAGES.denoBare, "deno bare container");
  const go = containerSubject(FLOOR_IMAGES.go, "go scratch container");
  // Their images are built by prepare(): only a missing engine skips them up front.
  const engine = podmanImageExists(image) !== undefined;
  for (const s of [compiled, bare, go]) if (engine) s.skip = undefined;

  compiled.prepare = async () => {
    if (podmanImageExists(image) && await imageTarget(image) === "compiled") {
      compiled.image = image;
      return undefined;
    }
    if (prebuilt(compiled.image!)) return undefined;
    if (!denortAvailable()) {
      return `shipshape compiled container: deno compile needs a denort ${Deno.version.deno} (DENORT_BIN unset, dl.deno.land unreachable)`;
    }
    const failed = await run("bash", ["tools/image.sh", "--target", "compiled"], { SHIPSHAPE_IMAGE: compiled.image! });
    return failed && `shipshape compiled container: tools/image.sh --target compiled failed: ${failed}`;
  };
  bare.prepare = async () => {
    const local = podmanImageExists(LOCAL_BASE) && podmanImageExists(LOCAL_DENO);
    const failed = await run("podman", [
      "build",
      "--quiet",
      "--format",
      "docker",
      ...(local ? ["--build-arg", `BASE_IMAGE=${LOCAL_BASE}`, "--build-arg", `DENO_IMAGE=${LOCAL_DENO}`] : []),
      "--build-arg",
      `VERSION=${deno.version}`,
      "-t",
      FLOOR_IMAGES.denoBare,
      "-f",
      "bench/baselines/deno_bare.Containerfile",
      "bench/baselines",
    ]);
    return failed && `deno bare container: podman build failed: ${failed}`;
  };
  go.prepare = async () => {
    const failed = await run("bash", ["tools/go_image.sh", FLOOR_IMAGES.go]);
    return failed && `go scratch container: ${failed}`;
  };
  return [compiled, bare, go];
}
