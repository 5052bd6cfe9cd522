/**
 * Logging: levels, the JSON and text formatters, and the stdout writer.
 *
 * One record is one line. On stdout, lines go through a bounded buffer to a writer thread that writes each one
 * the moment stdout takes it, so a stalled log reader never stops the event loop (probes and signals go on);
 * when the buffer is full the logger waits (LOG_BUFFER_FULL=wait) or drops and counts (drop); at exit the
 * buffer is flushed within a deadline. A vanished reader makes the writer stop writing, never throw.
 */

/** The levels, lowest first. */
export const LEVELS = ["debug", "info", "warn", "error"] as const;

/** One of LEVELS. */
export type Level = typeof LEVELS[number];

/** Extra key/value pairs of a record. */
export type Fields = Record<string, unknown>;

/** What the logger writes to: Deno.stdout, or an array-backed fake in tests. */
export interface SyncWriter {
  writeSync(bytes: Uint8Array): number;
}

/** The facts of one finished request, written as the access line. */
export interface AccessRecord {
  method: string;
  path: string;
  status: number;
  bytes: number;
  durationMs: number;
  remote: string;
  userAgent: string;
  requestId: string;
  /** The OpenTelemetry trace and span of the request, when telemetry is on. */
  traceId?: string;
  spanId?: string;
}

/** The longest string field written as is; longer ones are cut and marked, so one request cannot flood the log. */
export const MAX_FIELD_LENGTH = 1024;

const encoder = new TextEncoder();
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const WAIT_CELL = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the thread for `ms` milliseconds (the writer's back-off on a full non-blocking pipe). */
function sleepSync(ms: number): void {
  Atomics.wait(WAIT_CELL, 0, 0, ms);
}

/** What happens to a line when the log buffer is full: wait for room (nothing lost), or drop it and count it. */
export type BufferFull = "wait" | "drop";

/** Where log lines go: a line at a time, with the counts the metrics expose. */
export interface LineSink {
  /** Lines that could not be written because the output had failed. */
  readonly lost: number;
  /** Times a write waited: for room in a full buffer, or for a full non-blocking output. */
  readonly waits: number;
  /** Lines dropped because the buffer was full (LOG_BUFFER_FULL=drop). */
  readonly dropped: number;
  /** Writes `line` and a newline; false when it was counted as lost or dropped instead. */
  writeLine(line: string): boolean;
  /** Waits up to `ms` until every line is written; returns the bytes still unwritten. */
  flush(ms: number): number;
  /** Lines dropped and not yet reported in a line of their own. */
  readonly unreported: number;
  /** Marks `n` dropped lines as reported. */
  reported(n: number): void;
}

/**
 * Writes whole lines synchronously: loops on partial writes, waits and retries on WouldBlock (a
 * non-blocking pipe that is full), and on any other error (BrokenPipe: the reader is gone) stops writing
 * for good, counts what it could not write and reports that once on stderr. Used for injected writers (tests)
 * and where no writer thread can run.
 */
export class LineWriter implements LineSink {
  #out: SyncWriter;
  #broken: Error | undefined;
  #onBroken: (error: Error) => void;
  #buffer: Uint8Array<ArrayBuffer> = new Uint8Array(16 * 1024);
  lost = 0;
  waits = 0;
  readonly dropped = 0;

  constructor(out: SyncWriter, onBroken: (error: Error) => void = reportBroken) {
    this.#out = out;
    this.#onBroken = onBroken;
  }

  /** The error that ended writing, if any. */
  get broken(): Error | undefined {
    return this.#broken;
  }

  /** Writes `line` and a newline completely, or counts it as lost once the output has failed. */
  writeLine(line: string): boolean {
    if (this.#broken) {
      this.lost++;
      return false;
    }
    this.#buffer = encodeLine(line, this.#buffer);
    const bytes = this.#buffer.subarray(0, encodedLength);
    let offset = 0;
    let backoffMs = 1;
    while (offset < bytes.length) {
      let written: number;
      try {
        written = this.#out.writeSync(offset === 0 ? bytes : bytes.subarray(offset));
      } catch (error) {
        if (error instanceof Deno.errors.WouldBlock || error instanceof Deno.errors.Interrupted) {
          written = 0;
        } else {
          this.#broken = error instanceof Error ? error : new Error(String(error));
          this.lost++;
          this.#onBroken(this.#broken);
          return false;
        }
      }
      if (written > 0) {
        offset += written;
        backoffMs = 1;
      } else {
        this.waits++;
        sleepSync(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 50);
      }
    }
    return true;
  }

  flush(): number {
    return 0; // every line is written before writeLine returns
  }

  readonly unreported = 0;

  reported(): void {}
}

/** The size of the last line encodeLine wrote. */
let encodedLength = 0;

/** Encodes `line` and a newline into `buffer` (a larger one when needed, returned); its size is encodedLength. */
function encodeLine(line: string, buffer: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  if (buffer.length < line.length * 3 + 1) buffer = new Uint8Array(line.length * 3 + 1);
  const { written } = encoder.encodeInto(line, buffer);
  buffer[written] = 10;
  encodedLength = written + 1;
  return buffer;
}

/** Slots of the writer thread's control array (Int32 indices). */
const USED = 0; // bytes in the ring not yet written (the main thread adds, the thread subtracts)
const BROKEN = 1; // 1 once stdout failed for good
const THREAD_LOST = 2; // lines the thread discarded after stdout failed
const THREAD_WAITS = 3; // times the thread waited for a full non-blocking stdout
const ASLEEP = 4; // 1 while the thread sleeps until woken (it was idle for a while)
const CONTROL_BYTES = 32;

/** While lines keep coming, the writer thread looks for more this often (milliseconds)... */
const POLL_MS = 0.2;
/** ...and after this many looks that find nothing, it sleeps until the main thread wakes it. */
const IDLE_POLLS = 50;

/**
 * The writer thread's loop, sent to a Worker as source text (so it must not refer to anything outside itself: its
 * settings come in the message). It writes what the ring holds to stdout as soon as stdout takes it. Under load it
 * looks for new lines every `poll` ms instead of being woken for each one, so one write carries the lines of that
 * interval and neither thread makes a system call per line; after `idle` empty looks it sleeps until woken.
 */
function writerThread(
  event: MessageEvent<{ sab: SharedArrayBuffer; capacity: number; poll: number; idle: number }>,
): void {
  const { sab, capacity, poll, idle } = event.data;
  const control = new Int32Array(sab, 0, 8);
  const ring = new Uint8Array(sab, 32, capacity);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  let tail = 0;
  let backoff = 1;
  let broken = false;
  let empty = 0;
  for (;;) {
    const used = Atomics.load(control, 0);
    if (used === 0) {
      if (empty < idle) {
        empty++;
        Atomics.wait(pause, 0, 0, poll);
        continue;
      }
      // Asleep: from now on the main thread wakes it for the next line (it checks this flag after adding one).
      Atomics.store(control, 4, 1);
      Atomics.wait(control, 0, 0);
      Atomics.store(control, 4, 0);
      empty = 0;
      continue;
    }
    empty = 0;
    // At most PIPE_BUF (4096) bytes a write: a pipe takes such a write whole or not at all, even when it is
    // non-blocking (Deno's writeSync may have written part of a larger one before it reports WouldBlock).
    const chunk = ring.subarray(tail, tail + Math.min(used, capacity - tail, 4096));
    let written = chunk.length;
    if (!broken) {
      try {
        written = Deno.stdout.writeSync(chunk);
        backoff = 1;
      } catch (error) {
        if (error instanceof Deno.errors.WouldBlock || error instanceof Deno.errors.Interrupted) {
          Atomics.add(control, 3, 1);
          Atomics.wait(pause, 0, 0, backoff);
          backoff = Math.min(backoff * 2, 50);
          continue;
        }
        broken = true;
        Atomics.store(control, 1, 1);
        const name = error instanceof Error ? error.name : String(error);
        try {
          Deno.stderr.writeSync(
            new TextEncoder().encode(`shipshape: stdout failed (${name}); further log lines are discarded\n`),
          );
        } catch {
          // stderr is gone as well: there is nowhere left to say it.
        }
      }
    }
    if (broken) {
      let lines = 0;
      for (const byte of chunk) if (byte === 10) lines++;
      Atomics.add(control, 2, lines);
    }
    tail = (tail + written) % capacity;
    Atomics.sub(control, 0, written);
    Atomics.notify(control, 0); // the main thread may be waiting for room, or for the flush
  }
}

/**
 * The stdout sink: a ring buffer of `capacity` bytes shared with a writer thread. writeLine copies the line into
 * the ring and returns; the thread writes it as soon as stdout takes it (at once when idle, within POLL_MS under
 * load). A full ring (the reader stalled for longer than the ring lasts) makes writeLine wait for room, or drop the
 * line and count it.
 */
export class ThreadedWriter implements LineSink {
  #control: Int32Array;
  #ring: Uint8Array;
  #capacity: number;
  #full: BufferFull;
  #head = 0;
  #buffer: Uint8Array<ArrayBuffer> = new Uint8Array(16 * 1024);
  #lost = 0;
  #waits = 0;
  #unreported = 0;
  dropped = 0;

  constructor(capacity: number, full: BufferFull) {
    this.#capacity = capacity;
    this.#full = full;
    const sab = new SharedArrayBuffer(CONTROL_BYTES + capacity);
    this.#control = new Int32Array(sab, 0, CONTROL_BYTES / 4);
    this.#ring = new Uint8Array(sab, CONTROL_BYTES, capacity);
    const source = `self.onmessage = ${writerThread.toString()};`;
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    // The thread runs until the process exits (every exit of the server is explicit).
    new Worker(url, { type: "module" }).postMessage({ sab, capacity, poll: POLL_MS, idle: IDLE_POLLS });
    URL.revokeObjectURL(url);
  }

  get lost(): number {
    return this.#lost + Atomics.load(this.#control, THREAD_LOST);
  }

  get waits(): number {
    return this.#waits + Atomics.load(this.#control, THREAD_WAITS);
  }

  writeLine(line: string): boolean {
    if (Atomics.load(this.#control, BROKEN)) {
      this.#lost++;
      return false;
    }
    this.#buffer = encodeLine(line, this.#buffer);
    const bytes = this.#buffer.subarray(0, encodedLength);
    if (this.#full === "drop" && this.#capacity - Atomics.load(this.#control, USED) < bytes.length) {
      this.dropped++;
      this.#unreported++;
      return false;
    }
    let offset = 0;
    let waited = false;
    while (offset < bytes.length) {
      const used = Atomics.load(this.#control, USED);
      const room = this.#capacity - used;
      if (room === 0) {
        if (Atomics.load(this.#control, BROKEN)) {
          this.#lost++;
          return false;
        }
        if (!waited) this.#waits++;
        waited = true;
        Atomics.wait(this.#control, USED, used, 100);
        continue;
      }
      const n = Math.min(room, bytes.length - offset, this.#capacity - this.#head);
      this.#ring.set(bytes.subarray(offset, offset + n), this.#head);
      this.#head = (this.#head + n) % this.#capacity;
      offset += n;
      // The thread is woken only when it sleeps; while it polls it finds the line by itself.
      if (Atomics.add(this.#control, USED, n) === 0 && Atomics.load(this.#control, ASLEEP)) {
        Atomics.notify(this.#control, USED);
      }
    }
    return true;
  }

  flush(ms: number): number {
    const deadline = performance.now() + ms;
    let used = Atomics.load(this.#control, USED);
    while (used > 0 && !Atomics.load(this.#control, BROKEN)) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      Atomics.wait(this.#control, USED, used, left);
      used = Atomics.load(this.#control, USED);
    }
    return Atomics.load(this.#control, BROKEN) ? 0 : used;
  }

  get unreported(): number {
    return this.#unreported;
  }

  reported(n: number): void {
    this.#unreported -= n;
  }
}

function reportBroken(error: Error): void {
  try {
    const line = `shipshape: stdout failed (${error.name}); further log lines are discarded\n`;
    Deno.stderr.writeSync(encoder.encode(line));
  } catch {
    // stderr is gone as well: there is nowhere left to say it.
  }
}

/** Cuts a string to MAX_FIELD_LENGTH characters, marking the cut. */
export function clip(text: string): string {
  return text.length <= MAX_FIELD_LENGTH ? text : text.slice(0, MAX_FIELD_LENGTH) + "...";
}

function jsonValue(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, stack: value.stack };
  }
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") return clip(value);
  return value;
}

/** The clock cache: one Date and one ISO string per millisecond, shared by every line of that millisecond. */
const clock = { ms: NaN, date: new Date(0), iso: "" };

/** The current time, as one Date per millisecond: under load the lines of a millisecond share it. */
function currentTime(): Date {
  const ms = Date.now();
  if (ms !== clock.ms) {
    clock.ms = ms;
    clock.date = new Date(ms);
    clock.iso = clock.date.toISOString();
  }
  return clock.date;
}

/** time.toISOString(), from the clock cache when `time` is its millisecond. */
export function isoTime(time: Date): string {
  return time.getTime() === clock.ms ? clock.iso : time.toISOString();
}

/** Characters JSON.stringify leaves raw that some log viewers still take as line breaks or terminal controls. */
const JSON_UNSAFE = /[\u007f-\u009f\u2028\u2029]/;
const JSON_UNSAFE_ALL = new RegExp(JSON_UNSAFE.source, "g");

/** Escapes, as \\uXXXX, what JSON_UNSAFE matches in a JSON text (valid JSON either way). */
function escapeJsonUnsafe(json: string): string {
  if (!JSON_UNSAFE.test(json)) return json;
  return json.replace(JSON_UNSAFE_ALL, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

/** Formats one record as a JSON line: time, level, msg, then the fields. */
export function formatJson(time: Date, level: Level, msg: string, fields: Fields): string {
  const record: Fields = { time: isoTime(time), level, msg };
  for (const key in fields) if (!(key in record)) record[key] = fields[key]; // fields never overwrite these
  try {
    return escapeJsonUnsafe(JSON.stringify(record, jsonValue));
  } catch (error) {
    // The fields could not be serialised (a cycle, a throwing getter): the line keeps its message, and says why.
    return escapeJsonUnsafe(JSON.stringify({
      time: record.time,
      level,
      msg,
      log_error: `fields could not be serialized: ${String(error)}`,
    }, jsonValue));
  }
}

/** Printable ASCII without quote or backslash, not over MAX_FIELD_LENGTH: it needs nothing but the quotes around it. */
const JSON_PLAIN = new RegExp(`^[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]{0,${MAX_FIELD_LENGTH}}$`);

function jsonString(text: string): string {
  if (JSON_PLAIN.test(text)) return '"' + text + '"';
  return escapeJsonUnsafe(JSON.stringify(clip(text)));
}

/**
 * Formats an access record as a JSON line. Built field by field rather than through formatJson: this runs
 * once per request, and the generic path's replacer costs a function call per key.
 */
export function formatAccessJson(time: Date, r: AccessRecord): string {
  return `{"time":"${isoTime(time)}","level":"info","msg":"access","method":${jsonString(r.method)},` +
    `"path":${jsonString(r.path)},"status":${r.status},"bytes":${r.bytes},` +
    `"duration_ms":${Math.round(r.durationMs * 1000) / 1000},"remote":${jsonString(r.remote)},` +
    `"user_agent":${jsonString(r.userAgent)},"request_id":${jsonString(r.requestId)}` +
    (r.traceId === undefined ? "}" : `,"trace_id":${jsonString(r.traceId)},"span_id":${jsonString(r.spanId ?? "")}}`);
}

/**
 * Escapes what could break or forge a text line: control characters (C0, DEL, C1), line and paragraph
 * separators, quotes and backslashes become visible escapes.
 */
export function escapeText(text: string): string {
  // deno-lint-ignore no-control-regex -- matching control characters is the point
  return clip(text).replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029"\\]/g, (c) => {
    if (c === '"' || c === "\\") return "\\" + c;
    const code = c.charCodeAt(0);
    return code > 0xff ? "\\u" + code.toString(16) : "\\x" + code.toString(16).padStart(2, "0");
  });
}

function textValue(value: unknown): string {
  if (value instanceof Error) return `"${escapeText(value.stack ?? `${value.name}: ${value.message}`)}"`;
  const text = typeof value === "string" ? value : JSON.stringify(value, jsonValue) ?? String(value);
  return /^[A-Za-z0-9_.:/@+-]+$/.test(text) ? text : `"${escapeText(text)}"`;
}

/** Formats one record as a human line: time, level, message, then key=value pairs. */
export function formatText(time: Date, level: Level, msg: string, fields: Fields): string {
  let line = `${isoTime(time)} ${level.toUpperCase().padEnd(5)} ${escapeText(msg)}`;
  for (const [key, value] of Object.entries(fields)) {
    line += ` ${escapeText(key)}=${textValue(value)}`;
  }
  return line;
}

function two(n: number): string {
  return n < 10 ? "0" + n : String(n);
}

/** The Common Log Format time stamp, in UTC: 27/Nov/2026:01:58:45 +0000. */
export function clfTime(time: Date): string {
  return `${two(time.getUTCDate())}/${MONTHS[time.getUTCMonth()]}/${time.getUTCFullYear()}:` +
    `${two(time.getUTCHours())}:${two(time.getUTCMinutes())}:${two(time.getUTCSeconds())} +0000`;
}

/**
 * Formats an access record as a Common Log Format line (as the seed's http.server wrote), followed by
 * the quoted user agent, the request id and the duration.
 */
export function formatAccessText(time: Date, r: AccessRecord): string {
  return `${escapeText(r.remote || "-")} - - [${clfTime(time)}] "${escapeText(r.method)} ${escapeText(r.path)}" ` +
    `${r.status} ${r.bytes} "${escapeText(r.userAgent)}" rid=${escapeText(r.requestId)} ` +
    `dur_ms=${r.durationMs.toFixed(3)}` +
    (r.traceId === undefined ? "" : ` trace_id=${escapeText(r.traceId)} span_id=${escapeText(r.spanId ?? "")}`);
}

/** The log buffer's size by default: about 4,000 access lines, a few seconds of a stalled reader under load. */
export const DEFAULT_BUFFER_BYTES = 1024 * 1024;

/** How a Logger is built. */
export interface LoggerOptions {
  level?: Level;
  format?: "json" | "text";
  /** Where lines go, written synchronously (tests); by default stdout through the writer thread. */
  writer?: SyncWriter;
  /** The stdout buffer's size in bytes (DEFAULT_BUFFER_BYTES). */
  bufferBytes?: number;
  /** What a full stdout buffer does: "wait" (default) or "drop". */
  bufferFull?: BufferFull;
  /** The clock; tests pin it. */
  now?: () => Date;
}

/** Writes leveled records and access lines, one line each. */
export class Logger {
  #min: number;
  #format: "json" | "text";
  #out: LineSink;
  #now: () => Date;

  constructor(options: LoggerOptions = {}) {
    this.#min = LEVELS.indexOf(options.level ?? "info");
    this.#format = options.format ?? "json";
    this.#out = options.writer
      ? new LineWriter(options.writer)
      : new ThreadedWriter(options.bufferBytes ?? DEFAULT_BUFFER_BYTES, options.bufferFull ?? "wait");
    this.#now = options.now ?? currentTime;
  }

  /** The line sink (its `lost`, `waits` and `dropped` counts feed the metrics). */
  get writer(): LineSink {
    return this.#out;
  }

  /** True when records of `level` are written. */
  enabled(level: Level): boolean {
    return LEVELS.indexOf(level) >= this.#min;
  }

  /** Writes one record at `level` when that level is enabled. */
  log(level: Level, msg: string, fields: Fields = {}): void {
    if (!this.enabled(level)) return;
    const time = this.#now();
    this.#write(this.#format === "json" ? formatJson(time, level, msg, fields) : formatText(time, level, msg, fields));
  }

  #write(line: string): void {
    // After lines were dropped for a full buffer, the first line that fits is followed by one saying how many.
    // (That line may be dropped too: the count is then reported by the next one.)
    if (this.#out.writeLine(line) && this.#out.unreported > 0) {
      const dropped = this.#out.unreported;
      const time = this.#now();
      const msg = "log lines dropped: the log buffer was full";
      const notice = this.#format === "json"
        ? formatJson(time, "warn", msg, { dropped })
        : formatText(time, "warn", msg, { dropped });
      if (this.#out.writeLine(notice)) this.#out.reported(dropped);
    }
  }

  /** Writes a debug record. */
  debug(msg: string, fields?: Fields): void {
    this.log("debug", msg, fields);
  }

  /** Writes an info record. */
  info(msg: string, fields?: Fields): void {
    this.log("info", msg, fields);
  }

  /** Writes a warn record. */
  warn(msg: string, fields?: Fields): void {
    this.log("warn", msg, fields);
  }

  /** Writes an error record. */
  error(msg: string, fields?: Fields): void {
    this.log("error", msg, fields);
  }

  /** Writes the access line of a finished request (info level). */
  access(r: AccessRecord): void {
    if (!this.enabled("info")) return;
    const time = this.#now();
    this.#write(this.#format === "text" ? formatAccessText(time, r) : formatAccessJson(time, r));
  }

  /**
   * Waits up to `ms` for the buffered lines to reach stdout (before an exit). What is still unwritten then is
   * said on stderr, so it is never lost silently; returns those bytes.
   */
  flush(ms: number): number {
    const left = this.#out.flush(ms);
    if (left > 0) {
      try {
        Deno.stderr.writeSync(
          encoder.encode(`shipshape: ${left} bytes of log lines not written: stdout took none for ${ms} ms\n`),
        );
      } catch {
        // nowhere left to say it
      }
    }
    return left;
  }
}
