import { deepStrictEqual, equal, match, notEqual, ok } from "node:assert/strict";
import { activeSpan, TELEMETRY_ENABLED } from "./tracing.ts";
import { CollectorStub } from "./collector_stub.ts";
import { getFresh, RUN_ARGS, ServerProcess } from "./testing.ts";

/** The trace probe server, run with exactly the permissions of `deno task run` (main.ts swapped for the probe). */
const PROBE = [Deno.execPath(), ...RUN_ARGS.slice(0, -1), "testdata/trace_probe.ts"];

type ProbeAnswer = {
  enabled: boolean;
  before?: { traceId: string; spanId: string };
  after?: { traceId: string; spanId: string };
  env_permission: string;
};

async function ask(server: ServerProcess, path: string, headers: Record<string, string> = {}): Promise<ProbeAnswer> {
  using client = Deno.createHttpClient({});
  const res = await fetch(server.url(path), { client, headers });
  equal(res.status, 200);
  return await res.json();
}

Deno.test("activeSpan() is undefined outside a request handler", () => {
  equal(activeSpan(), undefined);
  equal(TELEMETRY_ENABLED, Deno.env.get("OTEL_DENO") === "true");
});

Deno.test("activeSpan() in a Deno.serve handler gives the ids of the exported server span, with the run task's permissions only", async () => {
  const collector = new CollectorStub();
  try {
    const server = await ServerProcess.start(collector.env(), PROBE);
    let plain: ProbeAnswer, continued: ProbeAnswer;
    const parent = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };
    try {
      equal(server.records()[0].outside, null, "no span outside a handler");
      plain = await ask(server, "/plain");
      continued = await ask(server, "/continued", { traceparent: `00-${parent.traceId}-${parent.spanId}-01` });
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
    equal(server.stderr, "");

    equal(plain.enabled, true);
    equal(plain.env_permission, "prompt", "OTEL_DENO was not readable, and was not read: no permission needed");
    match(plain.before?.traceId ?? "", /^[0-9a-f]{32}$/);
    match(plain.before?.spanId ?? "", /^[0-9a-f]{16}$/);
    deepStrictEqual(plain.after, plain.before, "the same span after an await");
    const [exported] = collector.serverSpans("/plain");
    ok(exported, `a server span for /plain; spans: ${JSON.stringify(collector.spans())}`);
    deepStrictEqual(plain.before, { traceId: exported.traceId, spanId: exported.spanId });

    // A W3C traceparent is continued: same trace id, a new span whose parent is the caller's span.
    equal(continued.before?.traceId, parent.traceId);
    notEqual(continued.before?.spanId, parent.spanId);
    const [child] = collector.serverSpans("/continued");
    ok(child, "a server span for /continued");
    deepStrictEqual(continued.before, { traceId: child.traceId, spanId: child.spanId });
    equal(child.parentSpanId, parent.spanId);
  } finally {
    await collector.close();
  }
});

Deno.test("activeSpan() is undefined in a handler when telemetry is off, and nothing is exported", async () => {
  const collector = new CollectorStub();
  try {
    const { OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL } = collector.env();
    const server = await ServerProcess.start({ OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL }, PROBE);
    let answer: ProbeAnswer;
    try {
      answer = await ask(server, "/off", { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
      equal((await getFresh(server.url("/again"))).status, 200);
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
    deepStrictEqual(answer, { enabled: false, env_permission: "prompt" });
    deepStrictEqual(collector.exports, []);
    equal(server.stderr, "");
  } finally {
    await collector.close();
  }
});

Deno.test("Deno's OTLP exporter is not bound by --allow-net: it reaches a collector on an address the run task does not allow", async () => {
  // 127.0.0.2 is loopback too, but not in the run task's --allow-net list: the exporter runs in the runtime,
  // outside the permission system, so only the network (NetworkPolicy egress) decides where telemetry may go.
  const collector = new CollectorStub("127.0.0.2");
  try {
    const server = await ServerProcess.start(collector.env(), PROBE);
    let answer: ProbeAnswer;
    try {
      answer = await ask(server, "/elsewhere");
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
    ok(!RUN_ARGS.some((arg) => arg.startsWith("--allow-net") && arg.includes("127.0.0.2")));
    match(answer.before?.spanId ?? "", /^[0-9a-f]{16}$/);
    equal(collector.serverSpans("/elsewhere")[0]?.spanId, answer.before?.spanId, "the span was exported");
    equal(server.stderr, "");
  } finally {
    await collector.close();
  }
});
