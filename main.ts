/** Entry point: read the config, build the logger and handler, serve, and run the shutdown sequence. */

import meta from "./deno.json" with { type: "json" };
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { createHandler, type ServerState } from "./handler.ts";
import { Listener } from "./listener.ts";
import { Logger } from "./logging.ts";
import { Metrics } from "./metrics.ts";
import { activeSpan, TELEMETRY_ENABLED } from "./tracing.ts";

/** The version of this build (deno.json's "version"). */
export const VERSION: string = meta.version;

/** Exit code of a start stopped by a bad setting or bad arguments. */
export const EXIT_BAD_CONFIG = 2;

/**
 * A signal within this many milliseconds of the first is the same event, not a second one: Ctrl-C in a terminal
 * signals the whole process group, and `deno task` forwards the signal it got as well, so the server sees two.
 */
export const SIGNAL_REPEAT_MS = 500;

/** How long an exit waits for buffered log lines to reach stdout. */
export const LOG_FLUSH_MS = 2000;

/** How long the exit of a second signal ("at once") waits for buffered log lines. */
const LOG_FLUSH_AT_ONCE_MS = 200;

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

/**
 * Resolves after `ms`, on Deno's own timers (through AbortSignal.timeout; the timer cannot be cancelled and keeps the
 * process alive until it fires or the process exits). Not the global setTimeout: since Deno 2.8 that is Node's
 * (denoland/deno#33118), and its first call loads Node's timer module, which blocks the event loop for about 9 ms
 * (measured on Deno 2.9.6). On the stop path that was most of what an idle stop took beyond a bare Deno server.
 */
function sleep(ms: number): Promise<void> {
  const signal = AbortSignal.timeout(ms);
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

/** Resolves once no request is in flight (requests on a server whose accept loop failed included). */
async function settled(metrics: Metrics): Promise<void> {
  while (metrics.inFlight.get() > 0) await sleep(10);
}

/** What the shutdown sequence works on. */
export interface ShutdownOptions {
  signal: ShutdownSignal;
  listener: Listener;
  state: ServerState;
  metrics: Metrics;
  logger: Logger;
  config: Config;
  /** Deno.exit after the log is flushed. */
  exit: (code: number) => never;
}

/**
 * The shutdown sequence, top to bottom. Called once, on the first SIGTERM or SIGINT; a second signal is
 * handled by the signal listener and exits at once.
 */
async function shutdown({ signal, listener, state, metrics, logger, config, exit }: ShutdownOptions): Promise<never> {
  const started = performance.now();
  // 1. Fail readiness at once, so Kubernetes takes the pod out of its Service endpoints; liveness stays 200
  //    so the kubelet does not restart a pod that is only stopping. From now on every answer also says
  //    `Connection: close`: a keep-alive connection stays on this pod (kube-proxy pins it), so its client must
  //    open a new one, which the Service sends to a ready pod.
  state.draining = true;
  logger.info("shutdown started", {
    signal,
    delay_ms: config.shutdownDelayMs,
    timeout_ms: config.shutdownTimeoutMs,
    in_flight: metrics.inFlight.get(),
  });
  // 2. Keep serving normally for the delay: endpoint removal reaches kube-proxy, ingress controllers and load
  //    balancers only after a while, and they keep sending new connections until it does. Busy keep-alive
  //    clients get their `Connection: close` answers meanwhile and move.
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
    return exit(0);
  }
  // cut_off counts the requests whose answer the handler had not yet handed to Deno in full (a streamed one
  // counts until Deno reports its last byte written). An answer already handed over but not yet read by a slow
  // client is not counted: the exit closes its connection as well.
  logger.error("shutdown timed out: in-flight requests cut off", {
    cut_off: metrics.inFlight.get(),
    timeout_ms: config.shutdownTimeoutMs,
    duration_ms: Math.round(performance.now() - started),
  });
  return exit(1);
}

/**
 * Runs the shutdown sequence; a failure inside it (a rejected drain, say) ends the process with an error line
 * and exit 1, instead of leaving the pod at readiness 503 until it is killed.
 */
export function startShutdown(options: ShutdownOptions): void {
  shutdown(options).catch((error) => {
    options.logger.error("shutdown failed", { error });
    options.exit(1);
  });
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

/**
 * Installs the SIGTERM/SIGINT listeners (first of all: as PID 1 a signal that finds no listener kills Deno) and
 * returns the function that hands them the shutdown once the server exists. A signal that arrives before that
 * waits for it. A repeat within SIGNAL_REPEAT_MS of the first is the same event; a later one exits at once.
 */
/** What the signal listeners hand over to once the server exists. */
interface SignalHandlers {
  onFirst(signal: ShutdownSignal): void;
  onSecond(signal: ShutdownSignal, first: ShutdownSignal): never;
}

function listenForSignals(): (handlers: SignalHandlers) => void {
  let first: { signal: ShutdownSignal; at: number } | undefined;
  let handlers: SignalHandlers | undefined;
  for (const signal of Object.keys(SIGNAL_NUMBERS) as ShutdownSignal[]) {
    Deno.addSignalListener(signal, () => {
      if (!first) {
        first = { signal, at: performance.now() };
        handlers?.onFirst(signal);
      } else if (performance.now() - first.at >= SIGNAL_REPEAT_MS) {
        handlers?.onSecond(signal, first.signal);
        Deno.exit(128 + SIGNAL_NUMBERS[signal]); // no server yet: nothing to log or flush
      }
    });
  }
  return (given) => {
    handlers = given;
    if (first) given.onFirst(first.signal);
  };
}

/** Starts the server with the environment's config and installs the shutdown sequence. */
export function serve(): void {
  const signals = listenForSignals();
  const config = readConfig();
  const logger = new Logger({
    level: config.logLevel,
    format: config.logFormat,
    bufferBytes: config.logBufferBytes,
    bufferFull: config.logBufferFull,
  });
  const exit = (code: number, flushMs = LOG_FLUSH_MS): never => {
    logger.flush(flushMs);
    Deno.exit(code);
  };
  const metrics = new Metrics({
    version: VERSION,
    startTimeSeconds: Math.round(performance.timeOrigin) / 1000,
    log: logger.writer,
  });
  const state: ServerState = { draining: false };
  const handler = createHandler({
    logger,
    metrics,
    state,
    version: VERSION,
    hostname: hostName(),
    maxInFlight: config.maxInFlight,
    // Only with OpenTelemetry on: with it off, the handler skips the lookup altogether.
    span: TELEMETRY_ENABLED ? activeSpan : undefined,
  });
  guardProcess(logger);
  const listener = new Listener({
    serve: {
      port: config.port,
      hostname: config.host,
      onError: (error) => {
        logger.error("request failed", { error });
        return new Response("internal server error\n", { status: 500 });
      },
    },
    handler,
    logger,
    fields: { version: VERSION, pid: Deno.pid },
    onState: (listening) => metrics.listening.set(listening ? 1 : 0),
  });

  signals({
    onFirst: (signal) => startShutdown({ signal, listener, state, metrics, logger, config, exit }),
    onSecond: (signal, first) => {
      logger.warn("second signal: exiting at once", { signal, first });
      return exit(128 + SIGNAL_NUMBERS[signal], LOG_FLUSH_AT_ONCE_MS);
    },
  });

  try {
    listener.listen();
  } catch (error) {
    logger.error("listen failed", { error, host: config.host, port: config.port });
    exit(1);
  }
}

/**
 * The URL `healthcheck` asks: /livez on the configured port. A server on all addresses (0.0.0.0, or :: which also
 * takes IPv4 on Linux) is asked over 127.0.0.1, the loopback address the permissions allow.
 */
export function healthcheckUrl(config: Pick<Config, "host" | "port">): string {
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  return `http://${host}:${config.port}/livez`;
}

/**
 * `shipshape healthcheck`: GET /livez on the local port, exit 0 on 200 and 1 otherwise, within 2 s. Lets a
 * shell-less image have a HEALTHCHECK and exec probes without curl.
 */
export async function healthcheck(): Promise<number> {
  const url = healthcheckUrl(readConfig());
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    if (response.ok) return 0;
    console.error(`shipshape: healthcheck: ${url} answered ${response.status}`);
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : "";
    console.error(`shipshape: healthcheck: ${url} failed: ${error instanceof Error ? error.message : error}${cause}`);
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
