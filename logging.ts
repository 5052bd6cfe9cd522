/**
 * Logging: levels, the JSON and text formatters, and the stdout writer.
 *
 * One record is one line and one synchronous write: nothing is held in memory for a later flush, so
 * nothing is lost at exit. A full or non-blocking pipe slows the writer down (it waits and retries);
 * a vanished reader makes it stop writing, never throw.
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

/**
 * Writes whole lines synchronously: loops on partial writes, waits and retries on WouldBlock (a
 * non-blocking pipe that is full), and on any other error (BrokenPipe: the reader is gone) stops writing
 * for good, counts what it could not write and reports that once on stderr.
 */
export class LineWriter {
  #out: SyncWriter;
  #broken: Error | undefined;
  #onBroken: (error: Error) => void;
  #buffer = new Uint8Array(16 * 1024);
  /** Lines that could not be written because the output had failed. */
  lost = 0;
  /** Times a write had to wait for a full non-blocking output (WouldBlock, or nothing written). */
  waits = 0;

  constructor(out: SyncWriter, onBroken: (error: Error) => void = reportBroken) {
    this.#out = out;
    this.#onBroken = onBroken;
  }

  /** The error that ended writing, if any. */
  get broken(): Error | undefined {
    return this.#broken;
  }

  /** Encodes `line` and a newline into the reused buffer (no allocation per line), growing it when needed. */
  #encode(line: string): Uint8Array {
    if (this.#buffer.length < line.length * 3 + 1) this.#buffer = new Uint8Array(line.length * 3 + 1);
    const { written } = encoder.encodeInto(line, this.#buffer);
    this.#buffer[written] = 10;
    return this.#buffer.subarray(0, written + 1);
  }

  /** Writes `line` and a newline completely, or counts it as lost once the output has failed. */
  writeLine(line: string): void {
    if (this.#broken) {
      this.lost++;
      return;
    }
    const bytes = this.#encode(line);
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
          return;
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

let lastMs = NaN;
let lastIso = "";
let lastDate = new Date(0);

/** The current time, as one Date per millisecond: under load the lines of a millisecond share it. */
function currentTime(): Date {
  const ms = Date.now();
  if (ms !== lastDate.getTime()) lastDate = new Date(ms);
  return lastDate;
}

/** time.toISOString(), computed once per millisecond: under load many lines share one. */
export function isoTime(time: Date): string {
  const ms = time.getTime();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = time.toISOString();
  }
  return lastIso;
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
    return JSON.stringify({
      time: record.time,
      level,
      msg,
      log_error: `fields could not be serialized: ${String(error)}`,
    });
  }
}

/** Printable ASCII without quote or backslash: a JSON string needs nothing but the quotes around it. */
const JSON_PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]{0,1024}$/;

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
    `"user_agent":${jsonString(r.userAgent)},"request_id":${jsonString(r.requestId)}}`;
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
    `dur_ms=${r.durationMs.toFixed(3)}`;
}

/** How a Logger is built. */
export interface LoggerOptions {
  level?: Level;
  format?: "json" | "text";
  /** Where lines go; Deno.stdout by default. */
  writer?: SyncWriter;
  /** The clock; tests pin it. */
  now?: () => Date;
}

/** Writes leveled records and access lines, one line each, straight to the writer. */
export class Logger {
  #min: number;
  #format: "json" | "text";
  #out: LineWriter;
  #now: () => Date;

  constructor(options: LoggerOptions = {}) {
    this.#min = LEVELS.indexOf(options.level ?? "info");
    this.#format = options.format ?? "json";
    this.#out = new LineWriter(options.writer ?? Deno.stdout);
    this.#now = options.now ?? currentTime;
  }

  /** The underlying line writer (its `lost` and `waits` counts feed the metrics). */
  get writer(): LineWriter {
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
    const line = this.#format === "json" ? formatJson(time, level, msg, fields) : formatText(time, level, msg, fields);
    this.#out.writeLine(line);
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
    if (this.#format === "text") {
      this.#out.writeLine(formatAccessText(time, r));
      return;
    }
    this.#out.writeLine(formatAccessJson(time, r));
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
  records(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line));
  }
}
