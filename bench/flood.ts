/**
 * The client side of a connection flood: many raw TCP connections of one kind held open against a server, their
 * responses read, then all closed. Shared by bench/memory.ts (what each kind costs) and flood_test.ts (overload).
 */

/** What each connection of a flood does. */
export type Kind = "idle" | "header" | "inflight";

/** What each kind sends; the descriptions say what the server holds for it. */
export const KINDS: { [kind in Kind]: { send: string; description: string } } = {
  idle: {
    send: "GET /livez HTTP/1.1\r\nHost: flood\r\n\r\n",
    description: "idle keep-alive connection (one request answered, the connection kept open)",
  },
  header: {
    // No blank line: the server waits for the rest of the headers, and Deno has no header-read timeout.
    send: "GET /livez HTTP/1.1\r\nHost: flood\r\nUser-Agent: flo",
    description: "half-open header connection (part of the headers sent, never the rest)",
  },
  inflight: {
    send: "GET /delay/10 HTTP/1.1\r\nHost: flood\r\n\r\n",
    description: "in-flight request (/delay/10, not yet answered)",
  },
};

/** The head of one response: its status (0 when the connection closed or failed first) and its headers. */
export interface Head {
  status: number;
  headers: Headers;
  /** Milliseconds from the request's send to the end of the head (or to the failure). */
  ms: number;
}

const HEAD_END = "\r\n\r\n";

/** Reads one response head from a connection; status 0 if it closes or fails before a whole head arrives. */
export async function readHead(conn: Deno.Conn, sentAt: number): Promise<Head> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(4096);
  let text = "";
  try {
    while (!text.includes(HEAD_END)) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  } catch { /* reset: no head */ }
  const ms = performance.now() - sentAt;
  const end = text.indexOf(HEAD_END);
  const status = end < 0 ? 0 : Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
  const headers = new Headers();
  if (end >= 0) {
    for (const line of text.slice(0, end).split("\r\n").slice(1)) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
  }
  return { status, headers, ms };
}

/** A set of open connections of one kind. */
export class Flood {
  readonly kind: Kind;
  readonly conns: Deno.TcpConn[] = [];
  /** When each connection's request was sent (performance.now()), by index. */
  readonly sentAt: number[] = [];
  /** Connections that could not be opened or written to. */
  failed = 0;
  /** Responses read for `idle` connections as they opened (status by index). */
  readonly opened: Head[] = [];

  private constructor(kind: Kind) {
    this.kind = kind;
  }

  /**
   * Opens `count` connections of `kind` to 127.0.0.1:`port`, `batch` at a time (so the listen backlog keeps up),
   * each sending its request; an idle connection's response is read before the next batch.
   */
  static async open(port: number, kind: Kind, count: number, batch = 100): Promise<Flood> {
    const flood = new Flood(kind);
    const bytes = new TextEncoder().encode(KINDS[kind].send);
    for (let start = 0; start < count; start += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, count - start) }, async () => {
        let conn: Deno.TcpConn | undefined;
        try {
          conn = await Deno.connect({ hostname: "127.0.0.1", port });
          const sentAt = performance.now();
          await conn.write(bytes);
          if (kind === "idle") flood.opened.push(await readHead(conn, sentAt));
          flood.conns.push(conn);
          flood.sentAt.push(sentAt);
        } catch {
          flood.failed++;
          try {
            conn?.close();
          } catch { /* already closed */ }
        }
      }));
    }
    return flood;
  }

  /** Reads the response head of every connection (waiting as long as each takes). */
  heads(): Promise<Head[]> {
    return Promise.all(this.conns.map((conn, i) => readHead(conn, this.sentAt[i])));
  }

  /** Closes every connection (the client going away). */
  close(): void {
    for (const conn of this.conns.splice(0)) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }
}

/** Counts of each status among response heads, e.g. { 200: 1000, 503: 1000 }; 0 counts the ones with none. */
export function statusCounts(heads: readonly Head[]): { [status: number]: number } {
  const counts: { [status: number]: number } = {};
  for (const head of heads) counts[head.status] = (counts[head.status] ?? 0) + 1;
  return counts;
}
