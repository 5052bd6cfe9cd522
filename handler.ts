/** The request handler: routes, probes, the demo page, metrics and the access log. Never calls Deno.serve. */

import type { Logger } from "./logging.ts";
import type { Metrics } from "./metrics.ts";
import type { SpanIds } from "./tracing.ts";

/** What the shutdown sequence changes and the probes read. */
export interface ServerState {
  /** True from the first SIGTERM/SIGINT on: /readyz answers 503 and every answer says `Connection: close`. */
  draining: boolean;
}

/** Everything the handler depends on, passed in once. */
export interface HandlerOptions {
  logger: Logger;
  metrics: Metrics;
  state: ServerState;
  version: string;
  hostname: string;
  /** Past this many requests in flight, requests other than probes and /metrics get a fast 503 (no limit if unset). */
  maxInFlight?: number;
  /** The active span of the request (given only when telemetry is on, so it costs nothing when off). */
  span?: () => SpanIds | undefined;
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

/** The Retry-After (seconds) of an answer refused for overload. */
export const RETRY_AFTER_SECONDS = 1;

/** The interval between the lines of /stream. */
export const STREAM_INTERVAL_MS = 500;

const STANDARD_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]);
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const NO_BODY_STATUSES = new Set([204, 205, 304]);
const TEXT = "text/plain; charset=utf-8";
const encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * A valid Host name: a registered name (letters, digits, "-", ".", "_", "~" or percent-encoded octets; RFC 3986's
 * sub-delimiters such as "*" or "&" are allowed there but never appear in a real host name) or an IPv4 address.
 * A bracketed IPv6 address is checked by the URL parser.
 */
const HOST_NAME = /^(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+$/;

/** The UTF-8 size of `text` (its length when it is ASCII, the common case, without encoding it). */
export function utf8Length(text: string): number {
  // deno-lint-ignore no-control-regex -- the ASCII range is the point
  return /^[\x00-\x7f]*$/.test(text) ? text.length : encoder.encode(text).length;
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

/**
 * True when `authority` is a valid Host value: a host name, an IPv4 address or a bracketed IPv6 address, then an
 * optional port (digits, leading zeros allowed) up to 65535. Empty names, user info and IPvFuture are refused.
 */
export function validHost(authority: string): boolean {
  let host = authority;
  const colon = authority.lastIndexOf(":");
  if (colon !== -1 && colon > authority.lastIndexOf("]")) {
    const port = authority.slice(colon + 1);
    if (!/^\d*$/.test(port) || Number(port) > 65535) return false;
    host = authority.slice(0, colon);
  }
  if (host.charCodeAt(0) !== 91 /* "[" */) return HOST_NAME.test(host);
  if (!/^\[[0-9A-Fa-f:.]+\]$/.test(host)) return false;
  try {
    new URL(`http://${host}/`);
    return true;
  } catch {
    return false;
  }
}

/** The request target as the client sent it, split for the log and for routing. */
export interface Target {
  /** The path as sent, without the query string (which often carries secrets): what the access line shows. */
  path: string;
  /** The path the router matches: dot segments resolved as a URL parser does (percent-encoding is kept). */
  route: string;
  /** Why the request is refused with 400, or undefined when it is not. */
  problem: Problem | undefined;
}

/**
 * Splits Deno's `request.url` back into the request target the client sent. Deno builds that URL as
 * `http://` + the Host header + the target, so `new URL(url).pathname` lets a Host such as `x/metrics?` choose
 * the route. Deno's exceptions: a Host that is not ASCII is decoded as UTF-8 there (while the header keeps one
 * character per byte); a Host that is empty, absent or not UTF-8 is replaced by the listening address; an
 * absolute-form target (or an HTTP/2 :authority) is taken as is, its authority ending at the first "/" or "?".
 * Here the Host is cut off exactly, so only what follows it is the client's path; any other authority must be
 * valid and, when there is a Host, be that Host (our policy, see docs/security.md), or the answer is a 400.
 */
export function requestTarget(url: string, host: string | null): Target {
  const start = url.indexOf("://") + 3;
  let authority: string | undefined;
  if (host !== null) {
    if (hostAt(url, start, host)) authority = host;
    else {
      const text = headerText(host); // the same string when the Host is ASCII
      if (text !== host && hostAt(url, start, text)) authority = text;
    }
  }
  let problem: Problem | undefined;
  if (authority === undefined) {
    let end = start;
    while (end < url.length && !authorityEnd(url.charCodeAt(end))) end++;
    authority = url.slice(start, end);
    if (host !== null && host.toLowerCase() !== authority.toLowerCase()) problem = "bad host header";
  }
  // Hosts repeat (the Service name, the pod's address for the kubelet): the last valid one is not checked again.
  if (authority !== lastValidHost) {
    if (validHost(authority)) lastValidHost = authority;
    else problem = "bad host header";
  }
  let rest = url.slice(start + authority.length);
  // RFC 9112 3.2: no fragment in a request target. Deno keeps what HTTP/1.1 sends, so a "#" would route as a path.
  const http = url.startsWith("http://") || /^https?$/i.test(url.slice(0, start - 3));
  if (!http || rest.includes("#")) problem ??= "bad request target";
  if (rest.charCodeAt(0) !== 47 /* "/" */) rest = "/" + rest; // "http://a?x": an empty path is "/"
  const query = rest.indexOf("?");
  const path = query === -1 ? rest : rest.slice(0, query);
  // Only a path that could change under URL normalisation pays for the parser.
  const route = /[%.\\]/.test(path) ? routePath(path) : path;
  return { path, route, problem };
}

/** Why a request is refused with 400 before routing. */
export type Problem = "bad host header" | "bad request target";

let lastValidHost = "localhost";

/** "/" or "?": where Deno ends an absolute-form target's authority (a "#" stays in it). */
function authorityEnd(code: number): boolean {
  return code === 47 || code === 63;
}

/** True when `url` holds `host` at `start`, followed by the end of the authority. */
function hostAt(url: string, start: number, host: string): boolean {
  const next = start + host.length;
  return url.startsWith(host, start) && (next === url.length || authorityEnd(url.charCodeAt(next)));
}

function routePath(path: string): string {
  try {
    // Joined, not resolved against a base: as a relative reference "//x/readyz" would name the host x, path /readyz.
    return new URL("http://h" + path).pathname;
  } catch {
    return path;
  }
}

/** Header values arrive as one character per byte: a UTF-8 value is decoded (invalid sequences become U+FFFD). */
export function headerText(value: string): string {
  if (!/[\x80-\xff]/.test(value)) return value;
  const bytes = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) bytes[i] = value.charCodeAt(i);
  return utf8Decoder.decode(bytes);
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The demo page for this host name and version (HTML-escaped). */
export function demoPage(hostname: string, version: string): string {
  return `<!DOCTYPE html>
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
}

/** Headers of the HTML page: it loads nothing, may not be framed and sends no referrer. */
const PAGE_HEADERS = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

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

/**
 * One request on its way through the handler: routes answer through it, so it knows the status and size the
 * access line reports, and it completes the request exactly once, whatever the order of events.
 */
class Call {
  status = 0;
  bytes = 0;
  /** Ask the client to close the connection after this answer. */
  close = false;
  /** A streamed answer: it completes from its stream, not when the handler returns. */
  streamed = false;
  /** The request's span, read on entry (where Deno's context for the request is active). */
  span: SpanIds | undefined;
  #done = false;

  constructor(
    readonly request: Request,
    readonly info: Deno.ServeHandlerInfo | undefined,
    readonly method: string,
    readonly target: Target,
    readonly route: Route,
    readonly started: number,
    readonly id: string,
    readonly complete: (call: Call) => void,
  ) {}

  /** The answer with the headers every response carries. */
  send(status: number, body: string | null, type?: string, extra?: Record<string, string>): Response {
    this.status = status;
    this.bytes = body === null || this.method === "HEAD" ? 0 : utf8Length(body);
    return new Response(body, { status, headers: this.headers(type, extra) });
  }

  /** A text/plain answer. */
  text(status: number, body: string, extra?: Record<string, string>): Response {
    return this.send(status, body, TEXT, extra);
  }

  headers(type?: string, extra?: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = extra
      ? { "x-request-id": this.id, "x-content-type-options": "nosniff", ...extra }
      : { "x-request-id": this.id, "x-content-type-options": "nosniff" };
    if (type) headers["content-type"] = type;
    if (this.close) headers.connection = "close";
    return headers;
  }

  /**
   * A streamed 200 that sends "tick N" every STREAM_INTERVAL_MS for `seconds`, pulled by Deno one line at a time.
   * The request completes when Deno reports the response done (`info.completed`: after the last byte was written
   * to the connection, or after the client went away); without `info` (a plain call), when the stream ends.
   */
  stream(seconds: number): Response {
    this.status = 200;
    if (this.method === "HEAD") {
      // The headers GET sends (no Content-Length: the length is not known in advance), and no body.
      return new Response(new ReadableStream({ start: (c) => c.close() }), { headers: this.headers(TEXT) });
    }
    this.streamed = true;
    const ticks = Math.floor((seconds * 1000) / STREAM_INTERVAL_MS) + 1;
    let sent = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const body = new ReadableStream<Uint8Array>({
      pull: (controller) =>
        new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            const chunk = encoder.encode(`tick ${sent}\n`);
            controller.enqueue(chunk);
            this.bytes += chunk.length;
            if (++sent === ticks) {
              controller.close();
              if (!this.info) this.end();
            }
            resolve();
          }, sent === 0 ? 0 : STREAM_INTERVAL_MS);
        }),
      cancel: () => {
        clearTimeout(timer);
        // 499 (nginx's "client closed request"): the client left before the last line.
        this.status = 499;
        if (!this.info) this.end();
      },
    }, { highWaterMark: 0 });
    this.info?.completed.finally(() => this.end());
    return new Response(body, { headers: this.headers(TEXT) });
  }

  /** Completes the request: metrics and access line, once. */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.complete(this);
  }
}

interface Route {
  /** The route template, used as the metrics label. */
  template: string;
  /** Probes and /metrics: never refused for overload, so the kubelet and Prometheus still get answers. */
  exempt?: boolean;
  run(call: Call, param: string): Response | Promise<Response>;
}

/** Builds the request handler around its dependencies. */
export function createHandler(options: HandlerOptions): Handler {
  const { logger, metrics, state, version, hostname, span } = options;
  const maxInFlight = options.maxInFlight ?? Infinity;
  const uptimeMs = options.uptimeMs ?? (() => performance.now());
  const page = demoPage(hostname, version);
  const ok = (call: Call) => call.text(200, "ok\n");
  const exact = new Map<string, Route>([
    ["/", { template: "/", run: (call) => call.send(200, page, "text/html; charset=utf-8", PAGE_HEADERS) }],
    ["/livez", { template: "/livez", exempt: true, run: ok }],
    ["/healthz", { template: "/healthz", exempt: true, run: ok }],
    ["/readyz", {
      template: "/readyz",
      exempt: true,
      run: (call) => state.draining ? call.text(503, "draining\n") : ok(call),
    }],
    ["/metrics", {
      template: "/metrics",
      exempt: true,
      run: (call) => call.send(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
    }],
    ["/info", {
      template: "/info",
      run: (call) =>
        call.send(
          200,
          JSON.stringify({
            version,
            hostname,
            deno: Deno.version.deno,
            v8: Deno.version.v8,
            typescript: Deno.version.typescript,
            uptime_seconds: Math.round(uptimeMs()) / 1000,
          }) + "\n",
          "application/json",
        ),
    }],
  ]);
  const prefixed: [string, Route][] = [
    ["/delay/", {
      template: "/delay/:seconds",
      run: async (call, param) => {
        const seconds = parseDelay(param);
        if (seconds === undefined) {
          return call.text(400, `bad delay: expected seconds from 0 to ${MAX_DELAY_SECONDS}, decimals allowed\n`);
        }
        const gone = await wait(seconds * 1000, call.request.signal);
        // 499 (nginx's "client closed request") records that nobody received the answer.
        return gone ? call.text(499, "client closed request\n") : call.text(200, `waited ${seconds}s\n`);
      },
    }],
    ["/stream/", {
      template: "/stream/:seconds",
      run: (call, param) => {
        const seconds = parseDelay(param);
        if (seconds === undefined) {
          return call.text(400, `bad stream: expected seconds from 0 to ${MAX_DELAY_SECONDS}, decimals allowed\n`);
        }
        return call.stream(seconds);
      },
    }],
    ["/status/", {
      template: "/status/:code",
      run: (call, param) => {
        const code = parseStatus(param);
        if (code === undefined) return call.text(400, "bad status: expected a code from 200 to 599\n");
        return NO_BODY_STATUSES.has(code) ? call.send(code, null) : call.text(code, `status ${code}\n`);
      },
    }],
  ];
  const notFound: Route = { template: UNMATCHED_ROUTE, run: (call) => call.text(404, "not found\n") };

  function match(path: string): [Route, string] {
    const route = exact.get(path);
    if (route) return [route, ""];
    for (const [prefix, r] of prefixed) {
      if (path.startsWith(prefix) && path.indexOf("/", prefix.length) === -1) return [r, path.slice(prefix.length)];
    }
    return [notFound, ""];
  }

  /** Writes the metrics and the access line of a finished request. */
  function complete(call: Call): void {
    metrics.inFlight.add(-1);
    const seconds = (performance.now() - call.started) / 1000;
    metrics.record(methodLabel(call.method), call.route.template, call.status, seconds);
    const remote = call.info?.remoteAddr;
    const ids = call.span;
    logger.access({
      method: call.method,
      path: call.target.path,
      status: call.status,
      bytes: call.bytes,
      durationMs: seconds * 1000,
      remote: remote && "hostname" in remote ? remote.hostname : "",
      userAgent: headerText(call.request.headers.get("user-agent") ?? ""),
      requestId: call.id,
      traceId: ids?.traceId,
      spanId: ids?.spanId,
    });
  }

  function failed(call: Call, error: unknown): Response {
    logger.error("handler failed", { error, request_id: call.id, method: call.method, path: call.target.path });
    return call.text(500, "internal server error\n");
  }

  /** Completes a plain answer now; a streamed one completes from its stream. */
  function done(call: Call, response: Response): Response {
    if (!call.streamed) call.end();
    return response;
  }

  // Not async: most routes answer synchronously, and a plain Response spares Deno.serve a promise per request.
  return function handle(request: Request, info?: Deno.ServeHandlerInfo): Response | Promise<Response> {
    const started = performance.now();
    const target = requestTarget(request.url, request.headers.get("host"));
    // A refused request is counted as unmatched: its target or Host must not pick the route label.
    const [route, param] = target.problem === undefined ? match(target.route) : [notFound, ""];
    const call = new Call(
      request,
      info,
      request.method,
      target,
      route,
      started,
      requestId(request.headers.get("x-request-id")),
      complete,
    );
    call.close = state.draining;
    if (span) call.span = span();
    const waiting = metrics.inFlight.get();
    metrics.inFlight.add(1);
    let response: Response | Promise<Response>;
    try {
      if (target.problem !== undefined) {
        call.close = true;
        response = call.text(400, target.problem + "\n");
      } else if (call.method !== "GET" && call.method !== "HEAD") {
        response = call.text(405, "method not allowed\n", { allow: ALLOWED_METHODS });
      } else if (waiting >= maxInFlight && !route.exempt) {
        // Overload: a fast refusal costs almost nothing, while an accepted slow request holds memory until it ends.
        call.close = true;
        metrics.rejected.inc();
        response = call.text(503, "overloaded\n", { "retry-after": String(RETRY_AFTER_SECONDS) });
      } else {
        response = route.run(call, param);
      }
    } catch (error) {
      response = failed(call, error);
    }
    if (response instanceof Promise) {
      return response.catch((error) => failed(call, error)).then((r) => done(call, r));
    }
    return done(call, response);
  };
}
