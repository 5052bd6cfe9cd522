/** The real server as a child process, started with exactly the flags of `deno task run`. */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import deno from "./deno.json" with { type: "json" };
import { loadConfig, VARIABLES } from "./config.ts";
import type { Listener } from "./listener.ts";
import { Logger } from "./logging.ts";
import { Metrics } from "./metrics.ts";
import { SIGNAL_REPEAT_MS, startShutdown } from "./main.ts";
import { get, getFresh, KeepAliveClient, MemoryWriter, ServerProcess, sleep, waitUntil } from "./testing.ts";

/** The in-flight gauge of a running server, read from its /metrics (that request counts itself). */
async function inFlightNow(server: ServerProcess): Promise<number> {
  return Number(/^http_requests_in_flight (\d+)$/m.exec((await getFresh(server.url("/metrics"))).body)?.[1]);
}

/** Sends `line` (e.g. "HEAD /") on a new connection that it then closes; the head and the body read back. */
async function rawExchange(port: number, line: string): Promise<[string, string]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(`${line} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`));
  let text = "";
  for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) text += chunk;
  const end = text.indexOf("\r\n\r\n");
  return [text.slice(0, end), text.slice(end + 4)];
}

Deno.test("main.ts serves every endpoint and logs one JSON access line per request on stdout only", async () => {
  const server = await ServerProcess.start();
  try {
    const listening = server.records()[0];
    equal(listening.msg, "listening");
    equal(listening.address, "127.0.0.1");
    equal(listening.version, deno.version);
    equal(typeof listening.pid, "number");

    const cases: [string, number, RegExp][] = [
      ["/", 200, /This is a demo page!/],
      ["/livez", 200, /^ok\n$/],
      ["/healthz", 200, /^ok\n$/],
      ["/readyz", 200, /^ok\n$/],
      ["/info", 200, /"version":"\d+\.\d+\.\d+"/],
      ["/delay/0.1", 200, /^waited 0.1s\n$/],
      ["/delay/nope", 400, /bad delay/],
      ["/status/418", 418, /^status 418\n$/],
      ["/status/42", 400, /bad status/],
      ["/missing", 404, /not found/],
      ["/metrics", 200, /http_requests_total\{method="GET",route="\/status\/:code",code="418"\} 1/],
    ];
    const bodies = new Map<string, string>();
    for (const [path, status, body] of cases) {
      const res = await get(server.url(path));
      bodies.set(path, res.text_);
      equal(res.status, status, path);
      match(res.text_, body, path);
      match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, path);
    }
    const post = await get(server.url("/"), { method: "POST", body: "x" });
    equal(post.status, 405);
    equal(post.headers.get("allow"), "GET, HEAD");
    deepStrictEqual(Object.keys(JSON.parse(bodies.get("/info")!)), [
      "version",
      "hostname",
      "deno",
      "v8",
      "typescript",
      "uptime_seconds",
    ]);

    // The writer thread puts a line on stdout a moment after its answer went out: wait for the last one.
    await waitUntil(() => server.access("/metrics").length > 0);
    for (const [path, status] of cases) {
      equal(server.access(path).length, 1, path);
      equal(server.access(path)[0].status, status, path);
    }
  } finally {
    server.kill("SIGTERM");
    equal(await server.exit(), 0);
  }
  equal(server.stderr, "", "nothing on stderr");
});

Deno.test("main.ts answers HEAD with GET's status and headers and no body, on every route", async () => {
  const server = await ServerProcess.start();
  try {
    // HEAD, read off the socket (fetch always hands back an empty HEAD body): GET's status and headers, no body.
    for (const path of ["/", "/livez", "/readyz", "/info", "/metrics", "/missing", "/status/418", "/stream/1"]) {
      const [getHead, getBody] = await rawExchange(server.port, `GET ${path}`);
      const [headHead, headBody] = await rawExchange(server.port, `HEAD ${path}`);
      const names = (head: string) =>
        head.split("\r\n").slice(1).map((l) => l.split(":")[0].toLowerCase()).filter((n) =>
          // transfer-encoding frames a body, which a HEAD answer has none of (the length stays unstated either way)
          n !== "x-request-id" && n !== "date" && n !== "transfer-encoding"
        ).sort();
      equal(headHead.split("\r\n")[0], getHead.split("\r\n")[0], path);
      deepStrictEqual(names(headHead), names(getHead), path);
      const length = /\r\ncontent-length: (\d+)/i;
      // /metrics and /info (uptime) change between the two requests: their lengths may differ by a few bytes.
      const same = path === "/metrics" || path === "/info" ? (x?: string) => x !== undefined : (x?: string) => x;
      equal(same(length.exec(headHead)?.[1]), same(length.exec(getHead)?.[1]), `${path}: length`);
      equal(headBody, "", `${path}: no body`);
      ok(path === "/status/418" || getBody.length > 0, path);
    }
  } finally {
    server.kill("SIGTERM");
    equal(await server.exit(), 0);
  }
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`main.ts exits 0 soon after ${signal} when idle, with shutdown lines`, async () => {
    const server = await ServerProcess.start();
    const started = performance.now();
    server.kill(signal);
    equal(await server.exit(), 0);
    ok(performance.now() - started < 2000, "well under the 2 s bound");
    const msgs = server.records().map((r) => r.msg);
    deepStrictEqual(msgs, ["listening", "shutdown started", "shutdown complete"]);
    equal(server.records()[1].signal, signal);
    equal(server.stderr, "");
  });
}

Deno.test("main.ts drains: /readyz 503 and new connections served during the delay, refused after, in-flight all answered", async () => {
  const server = await ServerProcess.start({ SHUTDOWN_DELAY: "1", SHUTDOWN_TIMEOUT: "5" });
  const inFlight = Array.from({ length: 4 }, () => getFresh(server.url("/delay/2")));
  await waitUntil(async () => (await inFlightNow(server)) === 5); // the four, and the scrape asking
  server.kill("SIGTERM");
  const started = await server.waitFor("shutdown started");
  equal(started.in_flight, 4);

  // During the delay: readiness fails, but new connections are still accepted and served.
  const ready = await getFresh(server.url("/readyz"));
  equal(ready.status, 503);
  equal((await getFresh(server.url("/livez"))).status, 200);
  equal((await getFresh(server.url("/delay/0.1"))).status, 200);

  // After the delay the listener is closed: a new connection is refused (asked until it is, within 3 s).
  let refused = "answered";
  await waitUntil(async () => {
    refused = await getFresh(server.url("/livez")).then(() => "answered", (e) => e.name);
    return refused !== "answered";
  }, 3000);
  equal(refused, "TypeError");

  const answers = await Promise.all(inFlight);
  deepStrictEqual(answers.map((a) => a.status), [200, 200, 200, 200]);
  equal(await server.exit(), 0);
  equal(server.access("/delay/2").length, 4);
  equal(server.access("/readyz")[0].status, 503);
  const last = server.records().at(-1)!;
  equal(last.msg, "shutdown complete");
  ok((last.duration_ms as number) >= 1000);
  equal(server.stderr, "");
});

Deno.test("main.ts tells keep-alive clients to close from the first signal on, so none loses a request to the drain", async () => {
  // A keep-alive connection stays pinned to the pod it was opened to (kube-proxy works at layer 4): it never sees
  // the endpoint change. Unless the answers say `Connection: close`, a client sends its next request on a
  // connection the drain then closes, and loses it. Here each client's next connection goes to a second server,
  // the ready pod a Service would pick. (With SHUTDOWN_DELAY=0 no answer can tell a client before the drain
  // closes idle connections, so a request racing that close is lost: the delay is what makes the hand-over clean.)
  const other = await ServerProcess.start();
  try {
    for (const delay of ["0.3", "1"]) {
      const server = await ServerProcess.start({ SHUTDOWN_DELAY: delay, SHUTDOWN_TIMEOUT: "5" });
      const clients = Array.from({ length: 16 }, () => new KeepAliveClient([server.port, other.port], "/livez"));
      await server.waitFor("access"); // the clients are under way
      await sleep(100);
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
      for (const c of clients) c.stop();
      await Promise.all(clients.map((c) => c.done));
      const tallies = JSON.stringify(clients.map((c) => c.tally));
      equal(clients.reduce((sum, c) => sum + c.tally.lost, 0), 0, `SHUTDOWN_DELAY=${delay}: lost: ${tallies}`);
      ok(clients.every((c) => c.tally.closes >= 1), `every client was told to close its connection: ${tallies}`);
      const draining = server.records().filter((r) => r.msg === "access").length;
      ok(draining > 0 && server.records().some((r) => r.msg === "shutdown complete"));
    }
  } finally {
    other.kill("SIGTERM");
    equal(await other.exit(), 0);
  }
});

Deno.test("main.ts exits 1 when the drain times out, naming how many requests were cut off", async () => {
  const server = await ServerProcess.start({ SHUTDOWN_TIMEOUT: "0.5" });
  const stuck = [getFresh(server.url("/delay/5")), getFresh(server.url("/delay/5"))].map((p) =>
    p.then(() => "answered", () => "cut off")
  );
  await waitUntil(async () => (await inFlightNow(server)) === 3);
  const signalled = performance.now();
  server.kill("SIGTERM");
  equal(await server.exit(), 1);
  const took = performance.now() - signalled;
  ok(took >= 450 && took < 3000, `exit after ${took} ms`);
  deepStrictEqual(await Promise.all(stuck), ["cut off", "cut off"]);
  const last = server.records().at(-1)!;
  equal(last.level, "error");
  match(last.msg as string, /shutdown timed out/);
  equal(last.cut_off, 2);
});

Deno.test("main.ts exits at once, non-zero, on a second signal", async () => {
  const server = await ServerProcess.start({ SHUTDOWN_DELAY: "30" });
  server.kill("SIGTERM");
  await server.waitFor("shutdown started");
  await sleep(SIGNAL_REPEAT_MS + 100); // a deliberate second signal, not the echo of the first
  const signalled = performance.now();
  server.kill("SIGINT");
  equal(await server.exit(), 130);
  ok(performance.now() - signalled < 2000);
  const last = server.records().at(-1)!;
  equal(last.msg, "second signal: exiting at once");
  equal(last.signal, "SIGINT");
});

Deno.test("main.ts drains on Ctrl-C under `deno task run`: the signal to the process group counts once", async () => {
  // Ctrl-C signals the terminal's whole process group: `deno task` and the server both get SIGINT, and deno task
  // forwards its own as well. setsid gives the task its own group, as a terminal does.
  const task = new ServerProcess({ SHUTDOWN_TIMEOUT: "5" }, ["setsid", Deno.execPath(), "task", "run"]);
  const listening = await task.waitFor("listening");
  task.port = listening.port as number;
  const inFlight = getFresh(task.url("/delay/1"));
  await waitUntil(async () => /^http_requests_in_flight 2$/m.test((await getFresh(task.url("/metrics"))).body));
  const kill = new Deno.Command("kill", { args: ["-INT", "--", `-${task.pid}`] }).outputSync();
  equal(kill.code, 0, new TextDecoder().decode(kill.stderr));
  equal((await inFlight).status, 200, "the in-flight request is answered");
  equal(await task.exit(), 0);
  const msgs = task.records().map((r) => r.msg);
  ok(!msgs.includes("second signal: exiting at once"), msgs.join(", "));
  equal(msgs.at(-1), "shutdown complete");
});

Deno.test("startShutdown() ends the process with an error line and exit 1 when the drain fails", async () => {
  const out = new MemoryWriter();
  const logger = new Logger({ writer: out });
  const exited = Promise.withResolvers<number>();
  const failing = { shutdown: () => Promise.reject(new Error("drain broke")) } as unknown as Listener;
  startShutdown({
    signal: "SIGTERM",
    listener: failing,
    state: { draining: false },
    metrics: new Metrics({ version: "t", startTimeSeconds: 0 }),
    logger,
    config: loadConfig(() => undefined),
    exit: (code) => {
      exited.resolve(code);
      return undefined as never;
    },
  });
  equal(await exited.promise, 1);
  const last = out.records().at(-1)!;
  equal(last.msg, "shutdown failed");
  equal((last.error as { message: string }).message, "drain broke");
});

Deno.test("main.ts refuses each bad setting with exit 2 and one line naming the variable", async () => {
  const bad: { [key: string]: string } = {
    PORT: "eighty",
    HOST: "no such host!",
    LOG_BUFFER: "1k",
    LOG_BUFFER_FULL: "block",
    MAX_IN_FLIGHT: "0",
    LOG_LEVEL: "loud",
    LOG_FORMAT: "xml",
    SHUTDOWN_DELAY: "-1",
    SHUTDOWN_TIMEOUT: "forever",
  };
  deepStrictEqual(Object.keys(bad).sort(), [...VARIABLES].sort());
  await Promise.all(
    Object.entries(bad).map(async ([name, value]) => {
      const server = new ServerProcess({ [name]: value });
      equal(await server.exit(), 2, name);
      deepStrictEqual(server.lines, [], `${name}: nothing on stdout`);
      const lines = server.stderr.trimEnd().split("\n");
      equal(lines.length, 1, `${name}: ${server.stderr}`);
      match(lines[0], new RegExp(`^shipshape: ${name}=${JSON.stringify(value)} is not valid: expected `));
    }),
  );
});

Deno.test("main.ts writes text-format access lines in the Common Log Format when LOG_FORMAT=text", async () => {
  const server = new ServerProcess({ LOG_FORMAT: "text" });
  const deadline = Date.now() + 10_000;
  while (!server.lines.some((l) => l.includes(" listening ")) && Date.now() < deadline) await sleep(50);
  const port = Number(/port=(\d+)/.exec(server.lines.join("\n"))?.[1]);
  const res = await fetch(`http://127.0.0.1:${port}/status/201`, { headers: { "user-agent": 'evil"agent' } });
  await res.body?.cancel();
  server.kill("SIGTERM");
  equal(await server.exit(), 0);
  const access = server.lines.find((l) => l.includes('"GET /status/201"'));
  match(access ?? "", /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/status\/201" 201 11 "/);
  equal(server.lines.length, 4, server.lines.join("\n")); // listening, access, shutdown started, complete
});

Deno.test("main.ts keeps Deno's built-in OpenTelemetry working: OTEL_DENO=true exports its request spans", async () => {
  const exports: { path: string; body: unknown }[] = [];
  const collector = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    exports.push({ path: new URL(req.url).pathname, body: await req.json() });
    return Response.json({});
  });
  try {
    const server = await ServerProcess.start({
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.addr.port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_SERVICE_NAME: "shipshape-test",
    });
    equal((await getFresh(server.url("/status/201"))).status, 201);
    server.kill("SIGTERM");
    equal(await server.exit(), 0);
    equal(server.access("/status/201").length, 1, "the access line still goes to stdout");
    const traces = exports.filter((e) => e.path === "/v1/traces").map((e) => JSON.stringify(e.body));
    ok(traces.length > 0, `exports: ${exports.map((e) => e.path)}`);
    match(traces.join(), /"stringValue":"shipshape-test"/);
    match(traces.join(), /"key":"http\.response\.status_code","value":\{"(string|int)Value":"?201"?\}/);
  } finally {
    await collector.shutdown();
  }
});
