/**
 * The rollout's subjects: how one replica of each is started on a port with the manifest's environment, stopped
 * the way its platform stops a pod, and which of its stdout lines are access lines of the load (counted by
 * bench/reader.sh, a native reader, as a container runtime reads a pod's log).
 */

import { RUN_ARGS } from "../testing.ts";
import type { RolloutSettings } from "./manifest.ts";
import { spawn, which } from "./subjects.ts";

/** The path the load requests: every subject answers it with 200. */
export const LOAD_PATH = "/";

/** A running replica. */
export interface Replica {
  port: number;
  /** Starts the stop the way the platform does (SIGTERM to the process; `podman stop -t grace`). */
  terminate(): Promise<void>;
  /** Ends it at once (the kubelet's SIGKILL after the grace period, and cleanup). */
  kill(): Promise<void>;
  /** The exit code, once it exited and its log was read to the end. */
  exited: Promise<number>;
  /** Access lines of 200 answers to the load's path it logged; known once it exited. */
  accessLines(): number;
  /** What it (or podman) wrote on stderr, to say why an exit was not clean. */
  stderr(): string;
}

/** One subject of the rollout comparison. */
export interface RolloutSubject {
  name: string;
  /** Why it is not measured here; undefined when it is. */
  skip?: string;
  /** An awk regular expression matching exactly its access lines of a 200 to GET `LOAD_PATH`. */
  accessPattern: string;
  start(port: number): Replica;
}

/**
 * The patterns of an access line of a 200 answer to GET `LOAD_PATH`, by log format (tested in rollout_test.ts
 * against real lines). Only 200s: answers the balancer makes itself (503 with no server up, 502) have no line.
 */
export const ACCESS_PATTERNS = {
  /** shipshape's JSON access record. */
  shipshape: `"msg":"access","method":"GET","path":"/","status":200[,}]`,
  /** bench/baselines/deno_abort.ts: `GET / 200`. */
  plain: "^GET / 200$",
  /** bench/baselines/node_server.mjs: `... "GET /" 200`. */
  node: `"GET /" 200$`,
  /** bench/baselines/python_server.py (http.server): `... "GET / HTTP/1.1" 200 -`. */
  python: `"GET / HTTP/1[.][01]" 200 `,
};

function processSubject(
  name: string,
  command: string | undefined,
  args: string[],
  accessPattern: string,
  env: { [key: string]: string } = {},
): RolloutSubject {
  return {
    name,
    skip: command ? undefined : `${name}: its runtime is not installed`,
    accessPattern,
    start(port) {
      const run = spawn(command!, args, { ...env, PORT: String(port), HOST: "127.0.0.1", READER_MATCH: accessPattern });
      return {
        port,
        terminate: async () => Deno.kill(await run.pid, "SIGTERM"),
        async kill() {
          try {
            Deno.kill(await run.pid, "SIGKILL");
          } catch { /* already gone */ }
          await run.exited.catch(() => {});
        },
        exited: run.exited,
        accessLines: () => run.report.matched,
        stderr: () => run.stderr.join(""),
      };
    },
  };
}

let containers = 0;

function containerSubject(image: string, settings: RolloutSettings): RolloutSubject {
  let exists: boolean | undefined;
  try {
    exists = new Deno.Command("podman", { args: ["image", "exists", image], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    exists = undefined;
  }
  const name = "shipshape container";
  return {
    name,
    skip: exists === undefined
      ? `${name}: no container engine (podman) on this machine`
      : exists
      ? undefined
      : `${name}: image ${image} not built (deno task image)`,
    accessPattern: ACCESS_PATTERNS.shipshape,
    start(port) {
      const container = `shipshape-rollout-${Deno.pid}-${++containers}`;
      const env = Object.entries(settings.env).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
      const run = spawn("podman", [
        "run",
        "--rm",
        "--name",
        container,
        "--read-only",
        "--no-healthcheck",
        ...env,
        "-p",
        `127.0.0.1:${port}:8080`,
        image,
      ], { READER_MATCH: ACCESS_PATTERNS.shipshape });
      const podman = (...args: string[]) =>
        new Deno.Command("podman", { args, stdin: "null", stdout: "null", stderr: "null" }).output();
      return {
        port,
        // The kubelet's stop: SIGTERM, SIGKILL after terminationGracePeriodSeconds. Not awaited: `exited` says.
        terminate() {
          void podman("stop", "-t", String(settings.graceSeconds), container);
          return Promise.resolve();
        },
        async kill() {
          await podman("rm", "--force", "--ignore", container);
          await run.exited.catch(() => {});
        },
        exited: run.exited,
        accessLines: () => run.report.matched,
        stderr: () => run.stderr.join(""),
      };
    },
  };
}

/** Every subject, shipshape first; the container only when asked for. */
export function rolloutSubjects(
  settings: RolloutSettings,
  options: { container: boolean; image: string },
): RolloutSubject[] {
  const deno = Deno.execPath();
  const shipshapeEnv = { ...settings.env };
  const list = [
    processSubject("shipshape", deno, RUN_ARGS, ACCESS_PATTERNS.shipshape, shipshapeEnv),
    ...(options.container ? [containerSubject(options.image, settings)] : []),
    processSubject("shipshape delay 0", deno, RUN_ARGS, ACCESS_PATTERNS.shipshape, {
      ...shipshapeEnv,
      SHUTDOWN_DELAY: "0",
    }),
    processSubject(
      "deno abort",
      deno,
      ["run", "--allow-net", "--allow-env=PORT", "bench/baselines/deno_abort.ts"],
      ACCESS_PATTERNS.plain,
    ),
    processSubject("node http", which("node"), ["bench/baselines/node_server.mjs"], ACCESS_PATTERNS.node),
    processSubject(
      "python http.server",
      which("python3"),
      ["-u", "bench/baselines/python_server.py"],
      ACCESS_PATTERNS.python,
    ),
  ];
  return list;
}
