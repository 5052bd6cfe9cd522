/**
 * The rollout's second client shape: a new TCP connection for every request (`Connection: close`, as curl or a
 * client without a pool does), at a fixed offered rate (open loop: a slow answer does not slow the sending).
 * Each request ends as a status or as one kind of connection error.
 */

/** How a request that got no answer ended. */
export type ConnectionError = "refused" | "reset" | "closed" | "timeout" | "other";

/** What the client counted. */
export interface NewConnectionCounts {
  /** Offered rate, requests per second. */
  rate: number;
  seconds: number;
  sent: number;
  /** Answers by status code. */
  statuses: { [status: string]: number };
  /** Requests without an answer, by kind: refused, reset, closed (no or a cut answer), timeout, other. */
  errors: { [kind in ConnectionError]: number };
  /** Requests due but not sent because `maxInFlight` were already in flight (the client's limit, not the server's). */
  skipped: number;
  /** The message of the first "other" error, to say what it was. */
  firstOther?: string;
}

/** Reads a raw HTTP/1.1 response; its status, or "closed" when the headers or the body are incomplete. */
export function parseResponse(bytes: Uint8Array): number | "closed" {
  const text = new TextDecoder("latin1").decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  const status = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
  if (end < 0 || !status) return "closed";
  const head = text.slice(0, end).toLowerCase();
  const body = text.length - end - 4;
  const length = /\r\ncontent-length: *(\d+)/.exec(head);
  if (length && body < Number(length[1])) return "closed";
  if (/\r\ntransfer-encoding: *chunked/.test(head) && !text.endsWith("0\r\n\r\n")) return "closed";
  return Number(status[1]);
}

/** Sorts an error thrown by a connection into a kind. */
export function errorKind(error: unknown): ConnectionError {
  if (error instanceof Deno.errors.ConnectionRefused) return "refused";
  if (
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted
  ) return "reset";
  return "other";
}

/** One request on its own connection: the status, or how it failed. */
async function once(port: number, request: Uint8Array, timeoutMs: number): Promise<number | ConnectionError | Error> {
  let conn: Deno.TcpConn | undefined;
  let timedOut = false;
  let closed = false;
  const close = () => {
    if (conn && !closed) {
      closed = true;
      conn.close();
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    close();
  }, timeoutMs);
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    if (timedOut) return "timeout";
    for (let written = 0; written < request.length;) written += await conn.write(request.subarray(written));
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(16384);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
    const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
    let offset = 0;
    for (const c of chunks) {
      all.set(c, offset);
      offset += c.length;
    }
    return parseResponse(all);
  } catch (error) {
    if (timedOut) return "timeout";
    const kind = errorKind(error);
    return kind === "other" ? (error instanceof Error ? error : new Error(String(error))) : kind;
  } finally {
    clearTimeout(timer);
    close();
  }
}

/**
 * Sends `GET path` to 127.0.0.1:`port` at `rate` requests per second, each on a new connection, until stop();
 * stop() waits for the requests in flight.
 */
export function startNewConnectionClient(
  port: number,
  path: string,
  rate: number,
  timeoutMs = 5000,
  maxInFlight = 256,
): { stop(): Promise<NewConnectionCounts> } {
  const request = new TextEncoder().encode(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: rollout-new-connection\r\nConnection: close\r\n\r\n`,
  );
  const counts: NewConnectionCounts = {
    rate,
    seconds: 0,
    sent: 0,
    statuses: {},
    errors: { refused: 0, reset: 0, closed: 0, timeout: 0, other: 0 },
    skipped: 0,
  };
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  let due = 0;
  const tick = setInterval(() => {
    const target = Math.floor(((performance.now() - started) / 1000) * rate);
    for (; due < target; due++) {
      if (inFlight.size >= maxInFlight) {
        counts.skipped++;
        continue;
      }
      counts.sent++;
      const p: Promise<void> = once(port, request, timeoutMs).then((outcome) => {
        if (typeof outcome === "number") counts.statuses[outcome] = (counts.statuses[outcome] ?? 0) + 1;
        else if (outcome instanceof Error) {
          counts.errors.other++;
          counts.firstOther ??= `${outcome.name}: ${outcome.message}`;
        } else counts.errors[outcome]++;
        inFlight.delete(p);
      });
      inFlight.add(p);
    }
  }, 5);
  return {
    async stop() {
      clearInterval(tick);
      counts.seconds = (performance.now() - started) / 1000;
      await Promise.all(inFlight);
      return counts;
    },
  };
}
