/** Entry point: read the config, build the logger and handler, serve, and run the shutdown sequence. */

import meta from "./deno.json" with { type: "json" };
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { createHandler, type ServerState } from "./handler.ts";
import { Logger } from "./logging.ts";
import { Metrics } from "./metrics.ts";

/** The version of this build (deno.json's "version"). */
export const VERSION: string = meta.version;

/** Exit code of a start stopped by a bad setting. */
export const EXIT_BAD_CONFIG = 2;

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const;
type ShutdownSignal = keyof typeof SIGNAL_NUMBERS;

function fail(message: string, code: number): never {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(`shipshape: ${message}\n`));
  } finally {
    Deno.exit(code);
  }
}

function readConfig(): Config {
  try {
    return loadConfig((name) => Deno.env.get(name));
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, EXIT_BAD_CONFIG);
    throw error;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The shutdown sequence, top to bottom (design.md). Called once, on the first SIGTERM or SIGINT; a second
 * signal is handled by the listener in serve() and exits at once.
 */
async function shutdown(
  signal: ShutdownSignal,
  server: Deno.HttpServer,
  state: ServerState,
  metrics: Metrics,
  logger: Logger,
  config: Config,
): Promise<never> {
  const started = performance.now();
  // 1. Fail readiness at once, so Kubernetes takes the pod out of its Service endpoints; liveness stays 200
  //    so the kubelet does not restart a pod that is only stopping.
  state.draining = true;
  logger.info("shutdown started", {
    signal,
    delay_ms: config.shutdownDelayMs,
    timeout_ms: config.shutdownTimeoutMs,
    in_flight: metrics.inFlight.get(),
  });
  // 2. Keep serving normally for the delay: endpoint removal reaches kube-proxy, ingress controllers and load
  //    balancers only after a while, and they keep sending new connections until it does.
  if (config.shutdownDelayMs > 0) await sleep(config.shutdownDelayMs);
  // 3. Drain: stop accepting, close idle keep-alive connections, let in-flight requests finish. shutdown() has
  //    no deadline of its own, so it races the timeout. (Aborting the serve signal instead would cut requests
  //    off, and aborting it after shutdown() began crashes the process: neither is used.)
  const drainStarted = performance.now();
  const outcome = await Promise.race([
    server.shutdown().then(() => "drained" as const),
    sleep(config.shutdownTimeoutMs).then(() => "timeout" as const),
  ]);
  // 4. Exit explicitly: as PID 1 a process that merely runs out of work is not a clean exit on every Deno.
  if (outcome === "drained") {
    logger.info("shutdown complete", {
      duration_ms: Math.round(performance.now() - started),
      drain_ms: Math.round(performance.now() - drainStarted),
    });
    Deno.exit(0);
  }
  logger.error("shutdown timed out: in-flight requests cut off", {
    cut_off: metrics.inFlight.get(),
    timeout_ms: config.shutdownTimeoutMs,
    duration_ms: Math.round(performance.now() - started),
  });
  Deno.exit(1);
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/** Starts the server with the environment's config and installs the shutdown sequence. */
export function serve(): void {
  const config = readConfig();
  const logger = new Logger({ level: config.logLevel, format: config.logFormat });
  const metrics = new Metrics({
    version: VERSION,
    startTimeSeconds: Math.round(performance.timeOrigin) / 1000,
    logLinesLost: () => logger.writer.lost,
  });
  const state: ServerState = { draining: false };
  const handler = createHandler({ logger, metrics, state, version: VERSION, hostname: hostName() });

  // Nothing thrown outside a request may end the process by surprise: log it and carry on.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    logger.error("unhandled rejection", { error: event.reason });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    logger.error("uncaught exception", { error: event.error });
  });

  // Listeners go in before the server listens: a signal that arrives right after the "listening" line must
  // find them (the callbacks cannot run before `server` is assigned, as Deno.serve returns synchronously).
  let server: Deno.HttpServer;
  let first: ShutdownSignal | undefined;
  for (const signal of Object.keys(SIGNAL_NUMBERS) as ShutdownSignal[]) {
    Deno.addSignalListener(signal, () => {
      if (first) {
        logger.warn("second signal: exiting at once", { signal, first });
        Deno.exit(128 + SIGNAL_NUMBERS[signal]);
      }
      first = signal;
      shutdown(signal, server, state, metrics, logger, config);
    });
  }

  try {
    server = Deno.serve({
      port: config.port,
      hostname: config.host,
      onListen: ({ hostname, port }) => {
        logger.info("listening", { address: hostname, port, version: VERSION, pid: Deno.pid });
      },
      onError: (error) => {
        logger.error("request failed", { error });
        return new Response("internal server error\n", { status: 500 });
      },
    }, handler);
  } catch (error) {
    logger.error("listen failed", { error, host: config.host, port: config.port });
    Deno.exit(1);
  }
}

/**
 * `shipshape healthcheck`: GET /livez on the local port, exit 0 on 200 and 1 otherwise, within 2 s. Lets a
 * shell-less image have a HEALTHCHECK and exec probes without curl.
 */
export async function healthcheck(): Promise<number> {
  const config = readConfig();
  const host = config.host === "0.0.0.0" || config.host === "::" || config.host === "[::]" ? "127.0.0.1" : config.host;
  const url = `http://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${config.port}/livez`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    if (response.ok) return 0;
    console.error(`shipshape: healthcheck: ${url} answered ${response.status}`);
  } catch (error) {
    console.error(`shipshape: healthcheck: ${url} failed: ${error instanceof Error ? error.message : error}`);
  }
  return 1;
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === "healthcheck" && rest.length === 0) {
    Deno.exit(await healthcheck());
  } else if (command === undefined) {
    serve();
  } else {
    fail(`unknown arguments ${JSON.stringify(Deno.args)}: expected none, or "healthcheck"`, EXIT_BAD_CONFIG);
  }
}
