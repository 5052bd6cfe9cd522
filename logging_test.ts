import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import fc from "fast-check";
import {
  type AccessRecord,
  clfTime,
  clip,
  escapeText,
  formatAccessJson,
  formatAccessText,
  formatJson,
  formatText,
  LineWriter,
  Logger,
  MAX_FIELD_LENGTH,
  type SyncWriter,
} from "./logging.ts";
import { MemoryWriter } from "./testing.ts";

const TIME = new Date("2026-11-27T01:02:03.456Z");
const now = () => TIME;

const ACCESS: AccessRecord = {
  method: "GET",
  path: "/delay/1",
  status: 200,
  bytes: 10,
  durationMs: 1002.5,
  remote: "10.0.0.7",
  userAgent: "curl/8.0",
  requestId: "abc-123",
};

Deno.test("Logger writes one JSON line per record with time, level, msg and fields", () => {
  const out = new MemoryWriter();
  const logger = new Logger({ writer: out, now });
  logger.info("listening", { port: 8080 });
  deepStrictEqual(out.lines, ['{"time":"2026-11-27T01:02:03.456Z","level":"info","msg":"listening","port":8080}']);
});

Deno.test("Logger drops records below its level", () => {
  const out = new MemoryWriter();
  const logger = new Logger({ writer: out, now, level: "warn" });
  logger.debug("d");
  logger.info("i");
  logger.access(ACCESS);
  logger.warn("w");
  logger.error("e");
  deepStrictEqual(out.records().map((r) => r.level), ["warn", "error"]);
});

Deno.test("Logger.access() writes the access line with every field the contract names", () => {
  const out = new MemoryWriter();
  new Logger({ writer: out, now }).access(ACCESS);
  deepStrictEqual(out.records(), [{
    time: "2026-11-27T01:02:03.456Z",
    level: "info",
    msg: "access",
    method: "GET",
    path: "/delay/1",
    status: 200,
    bytes: 10,
    duration_ms: 1002.5,
    remote: "10.0.0.7",
    user_agent: "curl/8.0",
    request_id: "abc-123",
  }]);
});

Deno.test("Logger in text format writes access lines in the Common Log Format", () => {
  const out = new MemoryWriter();
  const logger = new Logger({ writer: out, now, format: "text" });
  logger.access(ACCESS);
  logger.info("listening", { port: 8080, address: "0.0.0.0" });
  deepStrictEqual(out.lines, [
    '10.0.0.7 - - [27/Nov/2026:01:02:03 +0000] "GET /delay/1" 200 10 "curl/8.0" rid=abc-123 dur_ms=1002.500',
    "2026-11-27T01:02:03.456Z INFO  listening port=8080 address=0.0.0.0",
  ]);
});

Deno.test("formatJson() writes an error's name, message and stack", () => {
  const error = new TypeError("boom");
  const record = JSON.parse(formatJson(TIME, "error", "handler failed", { error }));
  equal(record.error.name, "TypeError");
  equal(record.error.message, "boom");
  match(record.error.stack, /TypeError: boom\n\s+at /);
});

Deno.test("formatJson() never lets a field overwrite time, level or msg", () => {
  deepStrictEqual(JSON.parse(formatJson(TIME, "info", "real", { msg: "forged", level: "error", time: "x", a: 1 })), {
    time: "2026-11-27T01:02:03.456Z",
    level: "info",
    msg: "real",
    a: 1,
  });
});

Deno.test("formatJson() survives values JSON cannot serialize", () => {
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const record = JSON.parse(formatJson(TIME, "info", "x", { circular, big: 1n }));
  equal(record.msg, "x");
  match(record.log_error, /fields could not be serialized/);
  equal(JSON.parse(formatJson(TIME, "info", "x", { big: 12n })).big, "12");
});

Deno.test("control characters, quotes and newlines in request data never break or forge a line", () => {
  const hostile = 'a"b\\c\nd\r{"level":"error"}\u0000\u001b[31m\u007f\u0085\u2028';
  const record = { ...ACCESS, path: hostile, userAgent: hostile, method: "G\nET", requestId: hostile };
  for (const format of ["json", "text"] as const) {
    const out = new MemoryWriter();
    const logger = new Logger({ writer: out, now, format });
    logger.access(record);
    logger.info(hostile, { [hostile]: hostile });
    equal(out.lines.length, 2, format);
    // deno-lint-ignore no-control-regex -- looking for control characters is the point
    for (const line of out.lines) ok(!/[\x00-\x1f\x7f-\x9f\u2028]/.test(line), `${format}: ${line}`);
    if (format === "json") {
      equal(out.records()[0].path, hostile);
      equal(out.records()[1].msg, hostile);
    }
  }
  equal(escapeText('"\n\\'), '\\"\\x0a\\\\');
});

Deno.test("long string fields are cut to MAX_FIELD_LENGTH and marked", () => {
  const out = new MemoryWriter();
  new Logger({ writer: out, now }).access({ ...ACCESS, path: "/" + "x".repeat(100_000) });
  const path = out.records()[0].path as string;
  equal(path.length, MAX_FIELD_LENGTH + 3);
  ok(path.endsWith("..."));
});

Deno.test("formatText() quotes values that need it", () => {
  equal(
    formatText(TIME, "warn", "msg", { a: "plain", b: "two words", c: 3, d: { x: 1 } }),
    '2026-11-27T01:02:03.456Z WARN  msg a=plain b="two words" c=3 d="{\\"x\\":1}"',
  );
});

Deno.test("clfTime() pads every part and uses UTC", () => {
  equal(clfTime(new Date("2026-01-05T04:05:06Z")), "05/Jan/2026:04:05:06 +0000");
  equal(formatAccessText(TIME, { ...ACCESS, remote: "" }).startsWith("- - - ["), true);
});

/** A writer that takes at most `chunk` bytes a call and throws WouldBlock every other call. */
class ChoppyWriter implements SyncWriter {
  bytes: number[] = [];
  calls = 0;
  constructor(readonly chunk: number) {}
  writeSync(data: Uint8Array): number {
    this.calls++;
    if (this.calls % 2 === 0) throw new Deno.errors.WouldBlock("full");
    const n = Math.min(this.chunk, data.length);
    this.bytes.push(...data.subarray(0, n));
    return n;
  }
}

Deno.test("LineWriter loops on partial writes and waits out WouldBlock without losing or reordering bytes", () => {
  const out = new ChoppyWriter(7);
  const writer = new LineWriter(out);
  const lines = Array.from({ length: 20 }, (_, i) => `line ${i} ${"é".repeat(i)}`);
  for (const line of lines) writer.writeLine(line);
  equal(new TextDecoder().decode(new Uint8Array(out.bytes)), lines.map((l) => l + "\n").join(""));
  equal(writer.lost, 0);
  ok(out.calls > 40);
  ok(writer.waits >= out.calls / 2 - 1, "every WouldBlock was a wait");
});

Deno.test("LineWriter stops writing on a broken pipe, counts lost lines and never throws", () => {
  let calls = 0;
  const reported: Error[] = [];
  const writer = new LineWriter({
    writeSync() {
      calls++;
      throw new Deno.errors.BrokenPipe("gone");
    },
  }, (error) => reported.push(error));
  writer.writeLine("a");
  writer.writeLine("b");
  writer.writeLine("c");
  equal(calls, 1);
  equal(writer.lost, 3);
  equal(reported.length, 1);
  ok(writer.broken instanceof Deno.errors.BrokenPipe);
});

Deno.test("property: every formatter writes one line without control characters that parses back (JSON)", () => {
  const text = fc.oneof(
    fc.string({ unit: "binary" }),
    fc.string(),
    fc.constantFrom('"}\n{"level":"error"', "\u2028", "\ud800"),
  );
  const record = fc.record({
    method: text,
    path: text,
    status: fc.integer({ min: 100, max: 599 }),
    bytes: fc.nat(),
    durationMs: fc.double({ min: 0, max: 1e7, noNaN: true }),
    remote: text,
    userAgent: text,
    requestId: text,
  });
  // deno-lint-ignore no-control-regex -- looking for control characters is the point
  const unsafe = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;
  fc.assert(
    fc.property(record, text, text, (r, msg, value) => {
      const json = formatAccessJson(TIME, r);
      ok(!unsafe.test(json), json);
      const parsed = JSON.parse(json);
      equal(parsed.path, clip(r.path));
      equal(parsed.user_agent, clip(r.userAgent));
      equal(parsed.request_id, clip(r.requestId));
      const line = formatAccessText(TIME, r);
      ok(!unsafe.test(line), line);
      ok(line.startsWith(escapeText(r.remote || "-") + " - - ["));
      const generic = formatJson(TIME, "warn", msg, { [msg]: value, nested: { value } });
      ok(!unsafe.test(generic), generic);
      const back = JSON.parse(generic);
      equal(back.msg, clip(msg));
      equal(back.nested.value, clip(value));
      const human = formatText(TIME, "warn", msg, { key: value });
      ok(!unsafe.test(human), human);
    }),
    { numRuns: 500 },
  );
});

Deno.test("formatJson() keeps one escaping path when the fields cannot be serialised: msg clipped, U+2028 and U+0085 escaped", () => {
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  const line = formatJson(new Date(0), "info", "a\u2028b\u0085c" + "x".repeat(2000), { cycle });
  ok(!/[\u2028\u0085]/.test(line), line.slice(0, 80));
  const record = JSON.parse(line);
  equal(record.msg, clip("a\u2028b\u0085c" + "x".repeat(2000)));
  match(record.log_error, /fields could not be serialized/);
});

Deno.test("formatAccessJson() and formatAccessText() end with the trace and span ids when there are some", () => {
  const r = {
    method: "GET",
    path: "/",
    status: 200,
    bytes: 1,
    durationMs: 1,
    remote: "r",
    userAgent: "u",
    requestId: "i",
  };
  const ids = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };
  equal(JSON.parse(formatAccessJson(new Date(0), r)).trace_id, undefined);
  deepStrictEqual(Object.entries(JSON.parse(formatAccessJson(new Date(0), { ...r, ...ids }))).slice(-2), [
    ["trace_id", ids.traceId],
    ["span_id", ids.spanId],
  ]);
  ok(!formatAccessText(new Date(0), r).includes("trace_id"));
  ok(formatAccessText(new Date(0), { ...r, ...ids }).endsWith(` trace_id=${ids.traceId} span_id=${ids.spanId}`));
});
