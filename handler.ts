/** The request handler: routes, probes, the demo page, metrics and the access log. Never calls Deno.serve. */

import type { Logger } from "./logging.ts";
import type { Metrics } from "./metrics.ts";

/** What the shutdown sequence changes and the probes read. */
export interface ServerState {
  /** True from the first SIGTERM/SIGINT on: /readyz answers 503. */
  draining: boolean;
}

/** Everything the handler depends on, passed in once. */
export interface HandlerOptions {
  logger: Logger;
  metrics: Metrics;
  state: ServerState;
  version: string;
  hostname: string;
  /** Milliseconds since the process started (performance.now by default). */
  uptimeMs?: () => number;
}

/** The handler's signature: a plain function from Request to Response. */
export type Handler = (request: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;

/** The longest /delay the server waits, in seconds. */
export const MAX_DELAY_SECONDS = 10;

/** The methods every route answers; others get 405 with this Allow value. */
export const ALLOWED_METHODS = "GET, HEAD";

/** The route label for paths no route matches, so unknown paths share one metrics series. */
export const UNMATCHED_ROUTE = "unmatched";

const STANDARD_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]);
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const NO_BODY_STATUSES = new Set([204, 205, 304]);
const encoder = new TextEncoder();

/** Reports the end of a streamed body: the status to log (499 when the client left) and the bytes sent. */
type StreamDone = (status: number, bytes: number) => void;

/** What a route answers, before it becomes a Response: the handler knows its size for the access line. */
interface Reply {
  status: number;
  /** The body as a string: Deno.serve sends strings with less work than byte arrays. */
  body: string | null;
  /** The body's size in UTF-8 bytes, for the access line. */
  bytes: number;
  type?: string;
  headers?: Record<string, string>;
  /**
   * A streamed body instead of `body`: the request stays in flight (and unlogged) until the stream ends,
   * which calls `done` exactly once.
   */
  stream?: (done: StreamDone) => ReadableStream<Uint8Array>;
}

type RouteRun = (request: Request, param: string) => Reply | Promise<Reply>;

/** One request on its way through the handler. */
interface Exchange {
  request: Request;
  info: Deno.ServeHandlerInfo | undefined;
  method: string;
  path: string;
  route: Route;
  started: number;
  id: string;
}

interface Route {
  /** The route template, used as the metrics label. */
  template: string;
  run: RouteRun;
}

/** The UTF-8 size of `text` (its length when it is ASCII, the common case, without encoding it). */
export function utf8Length(text: string): number {
  // deno-lint-ignore no-control-regex -- the ASCII range is the point
  return /^[\x00-\x7f]*$/.test(text) ? text.length : encoder.encode(text).length;
}

function text(status: number, body: string, headers?: Record<string, string>): Reply {
  return { status, ...sized(body), type: "text/plain; charset=utf-8", headers };
}

const OK = text(200, "ok\n");
const DRAINING = text(503, "draining\n");
const NOT_FOUND = text(404, "not found\n");
const METHOD_NOT_ALLOWED = text(405, "method not allowed\n", { allow: ALLOWED_METHODS });
const INTERNAL_ERROR = text(500, "internal server error\n");
const BAD_DELAY = text(400, `bad delay: expected seconds from 0 to ${MAX_DELAY_SECONDS}, decimals allowed\n`);
const BAD_STREAM = text(400, `bad stream: expected seconds from 0 to ${MAX_DELAY_SECONDS}, decimals allowed\n`);
const BAD_STATUS = text(400, "bad status: expected a code from 200 to 599\n");

/** A body and its UTF-8 size. */
function sized(body: string): { body: string; bytes: number } {
  return { body, bytes: utf8Length(body) };
}

function json(status: number, value: unknown): Reply {
  return { status, ...sized(JSON.stringify(value) + "\n"), type: "application/json" };
}

/** Returns the incoming X-Request-Id when it is sane (1-128 of A-Z a-z 0-9 . _ : -), else a fresh UUID. */
export function requestId(incoming: string | null): string {
  return incoming !== null && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
}

/** The metrics label for a method: standard methods as they are, anything else "_OTHER" (bounded cardinality). */
export function methodLabel(method: string): string {
  return STANDARD_METHODS.has(method) ? method : "_OTHER";
}

/** Parses a /delay argument: seconds, decimals allowed, capped at MAX_DELAY_SECONDS; undefined if malformed. */
export function parseDelay(param: string): number | undefined {
  if (!/^\d{1,6}(\.\d{1,6})?$/.test(param)) return undefined;
  return Math.min(Number(param), MAX_DELAY_SECONDS);
}

/**
 * Parses a /status argument. Fetch's Response can only carry a final status (200-599); informational
 * codes (100-199) cannot be the answer to a request, so they are refused like any other bad value.
 */
export function parseStatus(param: string): number | undefined {
  if (!/^\d{3}$/.test(param)) return undefined;
  const code = Number(param);
  return code >= 200 && code <= 599 ? code : undefined;
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Headers of the HTML page: it loads nothing, may not be framed and sends no referrer. */
const PAGE_HEADERS = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

/** The interval between the lines of /stream. */
export const STREAM_INTERVAL_MS = 500;

/** A body that sends "tick N" every STREAM_INTERVAL_MS for `seconds`, then ends; it stops when the client leaves. */
function ticker(seconds: number, done: StreamDone): ReadableStream<Uint8Array> {
  const ticks = Math.floor((seconds * 1000) / STREAM_INTERVAL_MS) + 1;
  let sent = 0;
  let bytes = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const tick = () => {
        const chunk = encoder.encode(`tick ${sent}\n`);
        controller.enqueue(chunk);
        bytes += chunk.length;
        sent++;
        if (sent < ticks) {
          timer = setTimeout(tick, STREAM_INTERVAL_MS);
        } else {
          controller.close();
          done(200, bytes);
        }
      };
      tick();
    },
    cancel() {
      clearTimeout(timer);
      done(499, bytes);
    },
  });
}

/** Waits `ms`, or less if the client goes away; true when the client went away. */
function wait(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Builds the request handler around its dependencies. */
export function createHandler(options: HandlerOptions): Handler {
  const { logger, metrics, state, version, hostname } = options;
  const uptimeMs = options.uptimeMs ?? (() => performance.now());
  const page = `<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8">
    <title>shipshape</title>
  </head>
  <body>
    <p>This is a demo page!</p>
    <p>Served by <code>${escapeHtml(hostname)}</code>, shipshape ${escapeHtml(version)}.</p>
  </body>
</html>
`;
  const pageBytes = utf8Length(page);

  const ok = () => OK;
  const exact = new Map<string, Route>([
    ["/", {
      template: "/",
      run: () => ({
        status: 200,
        body: page,
        bytes: pageBytes,
        type: "text/html; charset=utf-8",
        headers: PAGE_HEADERS,
      }),
    }],
    ["/livez", { template: "/livez", run: ok }],
    ["/healthz", { template: "/healthz", run: ok }],
    ["/readyz", {
      template: "/readyz",
      run: () => state.draining ? DRAINING : OK,
    }],
    ["/metrics", {
      template: "/metrics",
      run: () => ({
        status: 200,
        ...sized(metrics.render()),
        type: "text/plain; version=0.0.4; charset=utf-8",
      }),
    }],
    ["/info", {
      template: "/info",
      run: () =>
        json(200, {
          version,
          hostname,
          deno: Deno.version.deno,
          v8: Deno.version.v8,
          typescript: Deno.version.typescript,
          uptime_seconds: Math.round(uptimeMs()) / 1000,
        }),
    }],
  ]);
  const prefixed: [string, Route][] = [
    ["/delay/", {
      template: "/delay/:seconds",
      run: async (request, param) => {
        const seconds = parseDelay(param);
        if (seconds === undefined) return BAD_DELAY;
        const gone = await wait(seconds * 1000, request.signal);
        // 499 (nginx's "client closed request") records that nobody received the answer.
        return gone ? text(499, "client closed request\n") : text(200, `waited ${seconds}s\n`);
      },
    }],
    ["/stream/", {
      template: "/stream/:seconds",
      run: (_request, param) => {
        const seconds = parseDelay(param);
        if (seconds === undefined) return BAD_STREAM;
        return {
          status: 200,
          body: null,
          bytes: 0,
          type: "text/plain; charset=utf-8",
          stream: (done) => ticker(seconds, done),
        };
      },
    }],
    ["/status/", {
      template: "/status/:code",
      run: (_request, param) => {
        const code = parseStatus(param);
        if (code === undefined) return BAD_STATUS;
        return NO_BODY_STATUSES.has(code) ? { status: code, body: null, bytes: 0 } : text(code, `status ${code}\n`);
      },
    }],
  ];
  const notFound: Route = { template: UNMATCHED_ROUTE, run: () => NOT_FOUND };

  function match(path: string): { route: Route; param: string } {
    const route = exact.get(path);
    if (route) return { route, param: "" };
    for (const [prefix, r] of prefixed) {
      if (path.startsWith(prefix) && path.indexOf("/", prefix.length) === -1) {
        return { route: r, param: path.slice(prefix.length) };
      }
    }
    return { route: notFound, param: "" };
  }

  /** Writes the metrics and the access line of a finished request. */
  function complete(ex: Exchange, status: number, bytes: number): void {
    metrics.inFlight.add(-1);
    const seconds = (performance.now() - ex.started) / 1000;
    metrics.record(methodLabel(ex.method), ex.route.template, status, seconds);
    const remote = ex.info?.remoteAddr;
    logger.access({
      method: ex.method,
      path: ex.path,
      status,
      bytes,
      durationMs: seconds * 1000,
      remote: remote && "hostname" in remote ? remote.hostname : "",
      userAgent: ex.request.headers.get("user-agent") ?? "",
      requestId: ex.id,
    });
  }

  /** Turns the reply into the Response; the request completes now, or when a streamed body ends. */
  function finish(ex: Exchange, reply: Reply): Response {
    const headers: Record<string, string> = reply.headers
      ? { "x-request-id": ex.id, "x-content-type-options": "nosniff", ...reply.headers }
      : { "x-request-id": ex.id, "x-content-type-options": "nosniff" };
    if (reply.type) headers["content-type"] = reply.type;
    // From the first signal on, every answer asks the client to close its connection: a keep-alive connection
    // is pinned to this pod (kube-proxy keeps it on the pod it was opened to), so only a new connection can
    // reach a ready one, and it must be opened before the drain closes this listener.
    if (state.draining) headers.connection = "close";
    const head = ex.method === "HEAD";
    if (reply.stream && !head) {
      const body = reply.stream((status, bytes) => complete(ex, status, bytes));
      return new Response(body, { status: reply.status, headers });
    }
    const response = new Response(reply.body, { status: reply.status, headers });
    complete(ex, reply.status, head ? 0 : reply.bytes);
    return response;
  }

  function failed(ex: Exchange, error: unknown): Reply {
    logger.error("handler failed", { error, request_id: ex.id, method: ex.method, path: ex.path });
    return INTERNAL_ERROR;
  }

  // Not async: most routes answer synchronously, and a plain Response spares Deno.serve a promise per request.
  return function handle(request: Request, info?: Deno.ServeHandlerInfo): Response | Promise<Response> {
    const started = performance.now();
    const path = new URL(request.url).pathname;
    const { route, param } = match(path);
    const ex: Exchange = {
      request,
      info,
      method: request.method,
      path,
      route,
      started,
      id: requestId(request.headers.get("x-request-id")),
    };
    metrics.inFlight.add(1);
    let reply: Reply | Promise<Reply>;
    try {
      reply = ex.method === "GET" || ex.method === "HEAD" ? route.run(request, param) : METHOD_NOT_ALLOWED;
    } catch (error) {
      reply = failed(ex, error);
    }
    if (reply instanceof Promise) {
      return reply.catch((error) => failed(ex, error)).then((r) => finish(ex, r));
    }
    return finish(ex, reply);
  };
}
