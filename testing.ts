/**
 * Test support (no tests here): the real server as a child process with exactly the flags of `deno task run`,
 * and small HTTP helpers. Shared by the test files that run the server or its image.
 */

import deno from "./deno.json" with { type: "json" };
import type { SyncWriter } from "./logging.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** The arguments `deno task run` passes to deno, so the tests run with the same least privilege. */
export const RUN_ARGS: string[] = deno.tasks.run.command.split(" ").slice(1);

/** A parsed JSON log record. */
export type Record = { [key: string]: unknown };

/** A running server process: its stdout lines, parsed, and its stderr text. */
export class ServerProcess {
  readonly lines: string[] = [];
  stderr = "";
  port = 0;
  #child: Deno.ChildProcess;
  #stdout: ReadableStreamDefaultReader<Uint8Array>;
  #stdoutDone: Promise<void>;
  #stderrDone: Promise<void>;
  #waiters: (() => void)[] = [];
  #gate: PromiseWithResolvers<void> | undefined;

  /**
   * Starts `command` (by default deno with the flags of `deno task run` on main.ts) with only `env` (plus PORT=0
   * and HOST=127.0.0.1 unless given) in its environment.
   */
  constructor(env: { [key: string]: string }, command: string[] = [Deno.execPath(), ...RUN_ARGS]) {
    this.#child = new Deno.Command(command[0], {
      args: command.slice(1),
      cwd: ROOT,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", PORT: "0", HOST: "127.0.0.1", ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdout = this.#child.stdout.getReader();
    this.#stdoutDone = this.#readLines();
    this.#stderrDone = this.#readStderr();
  }

  /** The server's process id (of the command started). */
  get pid(): number {
    return this.#child.pid;
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) this.stderr += chunk;
  }

  async #readLines(): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    while (true) {
      if (this.#gate) await this.#gate.promise;
      const { value, done } = await this.#stdout.read();
      if (done) break;
      const parts = (pending + decoder.decode(value, { stream: true })).split("\n");
      pending = parts.pop() ?? "";
      this.lines.push(...parts);
      for (const wake of this.#waiters.splice(0)) wake();
    }
    if (pending) this.lines.push(pending);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Stops reading stdout (after the chunk being read), so the pipe fills up as if nobody read it. */
  pause(): void {
    this.#gate ??= Promise.withResolvers<void>();
  }

  /** Reads stdout again after pause(). */
  resume(): void {
    this.#gate?.resolve();
    this.#gate = undefined;
  }

  /** Closes the read end of the stdout pipe: the server's next write gets EPIPE. */
  async closeStdout(): Promise<void> {
    this.resume();
    await this.#stdout.cancel();
  }

  /** Every stdout line parsed as JSON (fails the test on a line that is not). */
  records(): Record[] {
    return this.lines.map((line) => JSON.parse(line));
  }

  /** Waits until a record with this msg appears on stdout; fails after `ms`. */
  async waitFor(msg: string, ms = 10_000): Promise<Record> {
    const deadline = Date.now() + ms;
    while (true) {
      const found = this.records().find((r) => r.msg === msg);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no "${msg}" line within ${ms} ms; stdout: ${this.lines}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Starts the server and waits for its "listening" line. */
  static async start(env: { [key: string]: string } = {}, command?: string[]): Promise<ServerProcess> {
    const server = new ServerProcess(env, command);
    const listening = await server.waitFor("listening");
    server.port = listening.port as number;
    return server;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Waits for the exit and for both streams to close; returns the exit code. */
  async exit(): Promise<number> {
    const status = await this.#child.status;
    await Promise.all([this.#stdoutDone, this.#stderrDone]);
    return status.code;
  }

  /** Access records of requests to this path. */
  access(path: string, method = "GET"): Record[] {
    return this.records().filter((r) => r.msg === "access" && r.path === path && r.method === method);
  }
}

/** The status line of the first answer on `conn` within `waitMs`, or "closed"; closes the connection. */
export async function statusLine(conn: Deno.Conn, waitMs: number): Promise<string> {
  const buffer = new Uint8Array(4096);
  const timer = setTimeout(() => conn.close(), waitMs);
  const n = await conn.read(buffer).catch(() => null);
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* closed by the timer */ }
  return n ? new TextDecoder().decode(buffer.subarray(0, n)).split("\r\n")[0] : "closed";
}

/** Sends raw bytes on a new connection; the status line of the answer, or "closed" if it closed without one. */
export async function raw(port: number, bytes: Uint8Array, waitMs = 2000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(bytes).catch(() => {});
  return await statusLine(conn, waitMs);
}

/** GET on a fresh connection (its own client), so it tests what a new connection gets. */
export async function getFresh(url: string): Promise<{ status: number; body: string }> {
  using client = Deno.createHttpClient({});
  const res = await fetch(url, { client });
  return { status: res.status, body: await res.text() };
}

/** GET with the shared client; the response with its body read as text_. */
export async function get(url: string, init?: RequestInit): Promise<Response & { text_: string }> {
  const res = await fetch(url, init);
  return Object.assign(res, { text_: await res.text() });
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port that was free a moment ago (bound to port 0 on loopback, then released). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Linux's USER_HZ, the unit of the CPU times in /proc/<pid>/stat (fixed at 100 by the x86-64 and arm64 ABIs). */
const USER_HZ = 100;

/** The CPU time (user + system, all threads) a process has used so far, in seconds, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses and may itself contain spaces: state is the first,
  // utime the 12th and stime the 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isFinite(ticks)) throw new Error(`no CPU times in /proc/${pid}/stat`);
  return ticks / USER_HZ;
}

/** RSS of a process in bytes, from /proc. */
export function rssBytes(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  if (!kb) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(kb[1]) * 1024;
}

/** What a keep-alive client saw: requests written, answers read, and requests written that got no answer. */
export interface KeepAliveTally {
  sent: number;
  answered: number;
  /** Requests written on a connection that then closed or reset before their answer: what a client loses. */
  lost: number;
  /** Answers that carried `Connection: close` (the client then dialled a new connection). */
  closes: number;
  /** New connections refused (no listener): never accepted, so not lost. */
  refused: number;
}

/**
 * A client that sends `GET path` on one keep-alive connection after another, as a pooled HTTP client does: it
 * re-dials only when an answer says `Connection: close` (or the connection drops), and stops once `stop()` says so
 * or a new connection is refused. Its n-th connection goes to `ports[n]` (the last port once they run out): what a
 * Service does when the pod of the first connection has left its endpoints. Written on raw TCP so that nothing in
 * the client hides a lost request.
 */
export class KeepAliveClient {
  readonly tally: KeepAliveTally = { sent: 0, answered: 0, lost: 0, closes: 0, refused: 0 };
  readonly done: Promise<void>;
  #stopped = false;

  #dials = 0;

  constructor(readonly ports: number[], readonly path: string, readonly pauseMs = 5) {
    this.done = this.#run();
  }

  /** Stops after the request in progress. */
  stop(): void {
    this.#stopped = true;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let conn: Deno.TcpConn;
      try {
        const port = this.ports[Math.min(this.#dials++, this.ports.length - 1)];
        conn = await Deno.connect({ hostname: "127.0.0.1", port });
      } catch {
        this.tally.refused++;
        return;
      }
      try {
        await this.#useConnection(conn);
      } finally {
        try {
          conn.close();
        } catch {
          // already closed by a reset
        }
      }
    }
  }

  async #useConnection(conn: Deno.TcpConn): Promise<void> {
    const request = new TextEncoder().encode(`GET ${this.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    const buffer = new Uint8Array(64 * 1024);
    let pending = "";
    while (!this.#stopped) {
      try {
        await conn.write(request);
      } catch {
        this.tally.lost++; // the write itself failed: the request never got anywhere it could be answered
        return;
      }
      this.tally.sent++;
      let answer: { close: boolean } | undefined;
      while (!answer) {
        let n: number | null;
        try {
          n = await conn.read(buffer);
        } catch {
          n = null;
        }
        if (n === null) {
          this.tally.lost++;
          return;
        }
        pending += new TextDecoder().decode(buffer.subarray(0, n));
        const end = pending.indexOf("\r\n\r\n");
        if (end === -1) continue;
        const head = pending.slice(0, end).toLowerCase();
        const length = Number(/\r\ncontent-length: *(\d+)/.exec(head)?.[1] ?? "0");
        if (pending.length < end + 4 + length) continue;
        pending = pending.slice(end + 4 + length);
        answer = { close: /\r\nconnection: *close/.test(head) };
      }
      this.tally.answered++;
      if (answer.close) {
        this.tally.closes++;
        return;
      }
      if (this.pauseMs > 0) await sleep(this.pauseMs);
    }
  }
}

/** A SyncWriter that keeps the lines in memory: what tests inject instead of stdout. */
export class MemoryWriter implements SyncWriter {
  #decoder = new TextDecoder();
  #pending = "";
  /** Every complete line written so far, without its newline. */
  readonly lines: string[] = [];

  writeSync(bytes: Uint8Array): number {
    const parts = (this.#pending + this.#decoder.decode(bytes, { stream: true })).split("\n");
    this.#pending = parts.pop() ?? "";
    this.lines.push(...parts);
    return bytes.length;
  }

  /** The lines parsed as JSON records. */
  records(): { [key: string]: unknown }[] {
    return this.lines.map((line) => JSON.parse(line));
  }
}

/** Polls `condition` every 20 ms until it holds; fails after `ms` (state to wait on, instead of a fixed sleep). */
export async function waitUntil(condition: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms: ${condition}`);
    await sleep(20);
  }
}
