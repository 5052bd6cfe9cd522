/** The listening socket, kept alive: listens again when Deno.serve's accept loop dies outside a shutdown. */

import type { Logger } from "./logging.ts";

/** The longest pause between two attempts to listen again. */
export const MAX_RELISTEN_MS = 2000;

/** While retries keep failing, one line says so at most this often. */
export const RETRY_REPORT_MS = 30_000;

/** What Listener needs, passed in once. */
export interface ListenerOptions {
  /** What to listen on and how to handle errors (onListen is the Listener's own). */
  serve: Deno.ServeTcpOptions;
  handler: Deno.ServeHandler<Deno.NetAddr>;
  logger: Logger;
  /** Extra fields of the "listening" line. */
  fields?: Record<string, unknown>;
  /** Told true when the server accepts connections and false when it stops (the `shipshape_listening` gauge). */
  onState?: (listening: boolean) => void;
  /** While retries keep failing, one line at most this often (RETRY_REPORT_MS). */
  reportMs?: number;
  /** Deno.serve, or a fake in tests. */
  serveFn?: (options: Deno.ServeTcpOptions, handler: Deno.ServeHandler<Deno.NetAddr>) => Deno.HttpServer<Deno.NetAddr>;
}

/**
 * The listening socket, kept alive. Deno.serve's accept loop ends for good on an accept error (EMFILE: the
 * process is out of file descriptors) while the process runs on, deaf. So when a server's loop ends outside a
 * shutdown, the address is listened on again, retried with back-off until it works: one error line when it
 * fails, one "listening again" line when it works, and while the retries keep failing one line every
 * RETRY_REPORT_MS naming the attempts and the last error (so a port taken by someone else does not go unsaid).
 * The failed server's open connections are left to finish; the drain then shuts it down as well, which waits for
 * the answers Deno has still to write.
 */
export class Listener {
  #options: ListenerOptions;
  #serveOptions: Deno.ServeTcpOptions;
  #serve: NonNullable<ListenerOptions["serveFn"]>;
  /** The servers whose accept loop still runs. */
  #servers = new Set<Deno.HttpServer<Deno.NetAddr>>();
  /** The servers whose accept loop failed: their connections may still be writing answers. */
  #failed = new Set<Deno.HttpServer<Deno.NetAddr>>();
  #stopping = false;
  #listened = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ListenerOptions) {
    this.#options = options;
    this.#serveOptions = options.serve;
    this.#serve = options.serveFn ?? Deno.serve;
  }

  /** Listens; throws when it cannot (address in use, not permitted). */
  listen(): void {
    const { logger, fields, onState } = this.#options;
    const server = this.#serve({
      ...this.#serveOptions,
      onListen: ({ hostname, port }) => {
        const again = this.#listened;
        this.#listened = true;
        onState?.(true);
        logger.info(again ? "listening again" : "listening", { address: hostname, port, ...fields });
      },
    }, this.#options.handler);
    // PORT=0 picked a free port: listening again must take the same one.
    this.#serveOptions = { ...this.#serveOptions, port: server.addr.port };
    this.#servers.add(server);
    server.finished.then(() => this.#servers.delete(server), (error) => {
      this.#servers.delete(server);
      this.#failed.add(server);
      if (this.#stopping) return;
      onState?.(false);
      logger.error("accept loop failed: listening again as soon as possible", { error });
      this.#retry(100, 1, performance.now());
    });
  }

  #retry(delayMs: number, attempt: number, reported: number): void {
    this.#timer = setTimeout(() => {
      if (this.#stopping) return;
      try {
        this.listen();
      } catch (error) {
        if (performance.now() - reported >= (this.#options.reportMs ?? RETRY_REPORT_MS)) {
          this.#options.logger.error("still not listening", { attempts: attempt, error });
          reported = performance.now();
        }
        this.#retry(Math.min(delayMs * 2, MAX_RELISTEN_MS), attempt + 1, reported);
      }
    }, delayMs);
  }

  /** Stops accepting (and retrying) and resolves once the connections of every listening server have finished. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    // Only when set: the first call of the global timer functions loads Node's timer module (see main.ts sleep).
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#options.onState?.(false);
    // A failed server is drained too: without that, the exit can come before Deno wrote answers its handlers gave.
    // (Its failure was logged already: a rejection of its shutdown says nothing new.)
    await Promise.all([
      ...[...this.#servers].map((server) => server.shutdown()),
      ...[...this.#failed].map((server) => server.shutdown().catch(() => {})),
    ]);
  }
}
