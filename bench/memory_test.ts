/** bench/memory.ts and bench/flood.ts: the quantity parser, the response-head reader and a small flood of each kind. */

import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { Flood, type Head, readHead, statusCounts } from "./flood.ts";
import { memoryOf, quantityBytes } from "./memory.ts";
import { ServerProcess } from "../testing.ts";

Deno.test("quantityBytes() reads Kubernetes memory quantities and refuses anything else", () => {
  equal(quantityBytes("128Mi"), 128 * 1024 * 1024);
  equal(quantityBytes("1Gi"), 1024 ** 3);
  equal(quantityBytes("500M"), 500e6);
  equal(quantityBytes("134217728"), 134217728);
  throws(() => quantityBytes("128 MB"), /Not a memory quantity: 128 MB/);
});

Deno.test("readHead() parses a status and headers, and gives status 0 when the connection closes first", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const served = (async () => {
    for (const answer of ["HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\r\nover", ""]) {
      const conn = await listener.accept();
      if (answer) await conn.write(new TextEncoder().encode(answer));
      conn.close();
    }
  })();
  const heads: Head[] = [];
  for (let i = 0; i < 2; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    heads.push(await readHead(conn, performance.now()));
    conn.close();
  }
  await served;
  listener.close();
  equal(heads[0].status, 503);
  equal(heads[0].headers.get("retry-after"), "1");
  equal(heads[1].status, 0);
  deepStrictEqual(statusCounts(heads), { 0: 1, 503: 1 });
});

Deno.test("Flood.open() holds each kind of connection open against the real server, and its RSS grows", async () => {
  // The closed /delay/10 requests would hold the drain for 10 s: a 1 s timeout cuts them (exit 1, not checked here).
  const server = await ServerProcess.start({ SHUTDOWN_DELAY: "0", SHUTDOWN_TIMEOUT: "1" });
  try {
    const before = memoryOf(server.pid);
    const idle = await Flood.open(server.port, "idle", 50);
    equal(idle.conns.length, 50);
    deepStrictEqual(statusCounts(idle.opened), { 200: 50 });
    const header = await Flood.open(server.port, "header", 50);
    const inflight = await Flood.open(server.port, "inflight", 5);
    equal(header.failed + inflight.failed, 0);
    const during = memoryOf(server.pid);
    ok(during.rss > before.rss, `RSS ${before.rss} -> ${during.rss}`);
    ok(during.anon > 0 && during.file > 0 && during.anon + during.file <= during.rss, JSON.stringify(during));
    for (const flood of [idle, header, inflight]) flood.close();
  } finally {
    server.kill("SIGTERM");
    await server.exit();
  }
});
