/**
 * Run by tracing_test.ts with exactly the flags of `deno task run`: a bare Deno.serve whose handler answers with
 * what activeSpan() returns (before and after an await), so the test can compare it with the exported span. Prints
 * a JSON "listening" line with its port, and exits 0 on SIGTERM (telemetry is flushed at exit).
 */

import { activeSpan, TELEMETRY_ENABLED } from "../tracing.ts";

const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async () => {
  const before = activeSpan();
  await new Promise((resolve) => setTimeout(resolve, 5));
  const after = activeSpan();
  return Response.json({
    enabled: TELEMETRY_ENABLED,
    before: before && { traceId: before.traceId, spanId: before.spanId },
    after: after && { traceId: after.traceId, spanId: after.spanId },
    env_permission: Deno.permissions.querySync({ name: "env", variable: "OTEL_DENO" }).state,
  });
});
Deno.addSignalListener("SIGTERM", async () => {
  await server.shutdown();
  Deno.exit(0);
});
console.log(JSON.stringify({ msg: "listening", port: server.addr.port, outside: activeSpan() ?? null }));
