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

/** Resolves once no request is in flight (requests on a server whose accept loop failed included). */
async function settled(metrics: Metrics): Promise<void> {
  while (metrics.inFlight.get() > 0) await sleep(10);
}

/**
 * The shutdown sequence, top to bottom (design.md). Called once, on the first SIGTERM or SIGINT; a second
 * signal is handled by the listener in serve() and exits at once.
 */
async function shutdown(
  signal: ShutdownSignal,
  listener: Listener,
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
  // 3. Drain: stop accepting, close idle keep-alive connections, let in-flight requests finish (streams too).
  //    shutdown() has no deadline of its own, so it races the timeout. (Aborting the serve signal instead would
  //    cut requests off, and aborting it after shutdown() began crashes the process: neither is used.)
  const drainStarted = performance.now();
  const outcome = await Promise.race([
    listener.shutdown().then(() => settled(metrics)).then(() => "drained" as const),
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

/** Logs what is thrown outside a request instead of letting it end the process by surprise. */
export function guardProcess(logger: Logger): void {
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    logger.error("unhandled rejection", { error: event.reason });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    logger.error("uncaught exception", { error: event.error });
  });
}

/** The longest pause between two attempts to listen again. */
const MAX_RELISTEN_MS = 2000;

/**
 * The listening socket, kept alive. Deno.serve's accept loop ends for good on an accept error (EMFILE: the
 * process is out of file descriptors) while the process runs on, deaf. So when a server's loop ends outside a
 * shutdown, the address is listened on again, quietly retried with back-off until descriptors are free: one
 * error line when it fails, one line when it listens again, never a line per failed attempt. The failed
 * server's open connections are left to finish (calling shutdown() on it cuts their requests off); the drain
 * waits for them through the in-flight count.
 */
export class Listener {
  #options: Deno.ServeTcpOptions;
  #handler: Deno.ServeHandler<Deno.NetAddr>;
  #logger: Logger;
  /** The servers whose accept loop still runs. */
  #servers = new Set<Deno.HttpServer<Deno.NetAddr>>();
  #stopping = false;
  #listened = false;

  constructor(options: Deno.ServeTcpOptions, handler: Deno.ServeHandler<Deno.NetAddr>, logger: Logger) {
    this.#options = options;
    this.#handler = handler;
    this.#logger = logger;
  }

  /** Listens; throws when it cannot (address in use, not permitted). */
  listen(): void {
    const server = Deno.serve({
      ...this.#options,
      onListen: ({ hostname, port }) => {
        const again = this.#listened;
        this.#listened = true;
        this.#logger.info(again ? "listening again" : "listening", {
          address: hostname,
          port,
          version: VERSION,
          pid: Deno.pid,
        });
      },
    }, this.#handler);
    // PORT=0 picked a free port: listening again must take the same one.
    this.#options = { ...this.#options, port: server.addr.port };
    this.#servers.add(server);
    server.finished.then(() => this.#servers.delete(server), (error) => {
      this.#servers.delete(server);
      if (this.#stopping) return;
      this.#logger.error("accept loop failed: listening again as soon as possible", { error });
      this.#retry(100);
    });
  }

  #retry(delayMs: number): void {
    setTimeout(() => {
      if (this.#stopping) return;
      try {
        this.listen();
      } catch {
        this.#retry(Math.min(delayMs * 2, MAX_RELISTEN_MS));
      }
    }, delayMs);
  }

  /** Stops accepting and resolves once the connections of every listening server have finished. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#servers].map((server) => server.shutdown()));
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
    logWriteWaits: () => logger.writer.waits,
  });
  const state: ServerState = { draining: false };
  const handler = createHandler({ logger, metrics, state, version: VERSION, hostname: hostName() });
  guardProcess(logger);
  const listener = new Listener(
    {
      port: config.port,
      hostname: config.host,
      onError: (error) => {
        logger.error("request failed", { error });
        return new Response("internal server error\n", { status: 500 });
      },
    },
    handler,
    logger,
  );

  // Signal listeners go in before the server listens: a signal that arrives right after the "listening" line
  // must find them.
  let first: ShutdownSignal | undefined;
  for (const signal of Object.keys(SIGNAL_NUMBERS) as ShutdownSignal[]) {
    Deno.addSignalListener(signal, () => {
      if (first) {
        logger.warn("second signal: exiting at once", { signal, first });
        Deno.exit(128 + SIGNAL_NUMBERS[signal]);
      }
      first = signal;
      shutdown(signal, listener, state, metrics, logger, config);
    });
  }

  try {
    listener.listen();
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
