import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import {
  createHandler,
  headerText,
  methodLabel,
  parseDelay,
  parseStatus,
  requestId,
  requestTarget,
  type ServerState,
  utf8Length,
  validHost,
} from "./handler.ts";
import { Logger } from "./logging.ts";
import { MemoryWriter, raw } from "./testing.ts";
import { Metrics } from "./metrics.ts";
import fc from "fast-check";

function setup(overrides: { metrics?: Metrics } = {}) {
  const out = new MemoryWriter();
  const logger = new Logger({ writer: out });
  const metrics = overrides.metrics ?? new Metrics({ version: "1.2.3", startTimeSeconds: 1, rss: () => 1 });
  const state: ServerState = { draining: false };
  const handler = createHandler({
    logger,
    metrics,
    state,
    version: "1.2.3",
    hostname: "pod-<7>",
    uptimeMs: () => 1500,
  });
  // As Deno.serve does, `completed` resolves once the response is done: here when the test says so (done()).
  let completed = Promise.withResolvers<void>();
  const call = (path: string, init?: RequestInit) => {
    completed = Promise.withResolvers<void>();
    const info = { remoteAddr: { transport: "tcp", hostname: "10.1.2.3", port: 5555 }, completed: completed.promise };
    return handler(new Request(`http://localhost${path}`, init), info as Deno.ServeHandlerInfo);
  };
  const done = async () => {
    completed.resolve();
    await completed.promise;
    await Promise.resolve();
  };
  return { out, metrics, state, call, done };
}

/**
 * The handler with its logger and metrics, called with a request whose `url` may be one `new Request` would refuse
 * (Deno.serve builds it from the client's Host header without parsing it): `url` replaces the request's.
 */
function setupRaw(options: { maxInFlight?: number } = {}) {
  const out = new MemoryWriter();
  const metrics = new Metrics({ version: "1.2.3", startTimeSeconds: 1, rss: () => 1 });
  const inner = createHandler({
    logger: new Logger({ writer: out }),
    metrics,
    state: { draining: false },
    version: "1.2.3",
    hostname: "pod",
    maxInFlight: options.maxInFlight,
  });
  const handler = (request: Request, info?: Deno.ServeHandlerInfo, url?: string) => {
    const raw = { url: url ?? request.url, method: request.method, headers: request.headers, signal: request.signal };
    return inner(raw as Request, info);
  };
  return { out, metrics, handler };
}

Deno.test("handler() serves the demo page with the host name and version, HTML-escaped", async () => {
  const { call } = setup();
  const res = await call("/");
  equal(res.status, 200);
  equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  const body = await res.text();
  match(body, /This is a demo page!/);
  match(body, /pod-&#60;7&#62;/);
  match(body, /1\.2\.3/);
});

Deno.test("handler() answers 200 on /livez and /healthz, also while draining", async () => {
  const { call, state } = setup();
  for (const draining of [false, true]) {
    state.draining = draining;
    for (const path of ["/livez", "/healthz"]) {
      const res = await call(path);
      equal(res.status, 200, `${path} draining=${draining}`);
      equal(await res.text(), "ok\n");
    }
  }
});

Deno.test("handler() answers 503 on /readyz while draining and 200 before", async () => {
  const { call, state } = setup();
  const before = await call("/readyz");
  equal(before.status, 200);
  await before.body?.cancel();
  state.draining = true;
  const during = await call("/readyz");
  equal(during.status, 503);
  equal(await during.text(), "draining\n");
});

Deno.test("handler() answers /info with versions and uptime, and no environment", async () => {
  const { call } = setup();
  const res = await call("/info");
  equal(res.headers.get("content-type"), "application/json");
  deepStrictEqual(await res.json(), {
    version: "1.2.3",
    hostname: "pod-<7>",
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    uptime_seconds: 1.5,
  });
});

Deno.test("handler() records route templates, never raw paths, in /metrics", async () => {
  const { call } = setup();
  for (const path of ["/delay/0", "/delay/0.001", "/status/418", "/nope", "/other/nope"]) {
    await (await call(path)).body?.cancel();
  }
  const res = await call("/metrics");
  equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await res.text();
  match(text, /http_requests_total\{method="GET",route="\/delay\/:seconds",code="200"\} 2/);
  match(text, /http_requests_total\{method="GET",route="\/status\/:code",code="418"\} 1/);
  match(text, /http_requests_total\{method="GET",route="unmatched",code="404"\} 2/);
  ok(!text.includes("/nope"));
  ok(!text.includes('"/delay/0"'));
  match(text, /^http_requests_in_flight 1$/m); // the /metrics request itself
});

Deno.test("handler() waits on /delay/{seconds}, decimals allowed, and refuses anything else with 400", async () => {
  const { call } = setup();
  const started = performance.now();
  const res = await call("/delay/0.2");
  equal(res.status, 200);
  equal(await res.text(), "waited 0.2s\n");
  ok(performance.now() - started >= 190);
  for (const bad of ["/delay/x", "/delay/-1", "/delay/1e3", "/delay/", "/delay/1.", "/delay/9999999"]) {
    const r = await call(bad);
    equal(r.status, 400, bad);
    await r.body?.cancel();
  }
});

Deno.test("parseDelay() caps at 10 seconds", () => {
  equal(parseDelay("10"), 10);
  equal(parseDelay("11"), 10);
  equal(parseDelay("999999.999999"), 10);
  equal(parseDelay("0.5"), 0.5);
  equal(parseDelay("abc"), undefined);
});

Deno.test("handler() ends /delay early with 499 when the client goes away", async () => {
  const { call } = setup();
  const controller = new AbortController();
  const started = performance.now();
  const pending = call("/delay/5", { signal: controller.signal });
  setTimeout(() => controller.abort(), 50);
  const res = await pending;
  equal(res.status, 499);
  await res.body?.cancel();
  ok(performance.now() - started < 2000);
});

Deno.test("handler() answers /status/{code} with that code, bodiless where HTTP says so", async () => {
  const { call } = setup();
  for (const code of [200, 201, 299, 404, 418, 500, 503, 599]) {
    const res = await call(`/status/${code}`);
    equal(res.status, code);
    equal(await res.text(), `status ${code}\n`);
  }
  for (const code of [204, 205, 304]) {
    const res = await call(`/status/${code}`);
    equal(res.status, code);
    equal(res.body, null);
  }
  for (const bad of ["/status/99", "/status/100", "/status/199", "/status/600", "/status/abc", "/status/2000"]) {
    const res = await call(bad);
    equal(res.status, 400, bad);
    await res.body?.cancel();
  }
});

Deno.test("parseStatus() accepts final statuses only", () => {
  equal(parseStatus("200"), 200);
  equal(parseStatus("599"), 599);
  equal(parseStatus("101"), undefined);
  equal(parseStatus("+20"), undefined);
});

Deno.test("handler() answers 405 with an Allow header to other methods, and 404 to unknown paths", async () => {
  const { call } = setup();
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"]) {
    const res = await call("/", { method });
    equal(res.status, 405, method);
    equal(res.headers.get("allow"), "GET, HEAD");
    await res.body?.cancel();
  }
  const res = await call("/nothing/here");
  equal(res.status, 404);
  await res.body?.cancel();
});

Deno.test("handler() answers HEAD like GET and logs 0 bytes", async () => {
  const { call, out } = setup();
  const res = await call("/livez", { method: "HEAD" });
  equal(res.status, 200);
  await res.body?.cancel();
  equal(out.records()[0].bytes, 0);
});

Deno.test("handler() writes one access line per request, after the response is known", async () => {
  const { call, out } = setup();
  const res = await call("/status/404", { headers: { "user-agent": "probe/1", "x-request-id": "req-42" } });
  equal(await res.text(), "status 404\n");
  const records = out.records();
  equal(records.length, 1);
  const { time, duration_ms, ...rest } = records[0];
  equal(typeof time, "string");
  equal(typeof duration_ms, "number");
  deepStrictEqual(rest, {
    level: "info",
    msg: "access",
    method: "GET",
    path: "/status/404",
    status: 404,
    bytes: 11,
    remote: "10.1.2.3",
    user_agent: "probe/1",
    request_id: "req-42",
  });
});

Deno.test("handler() echoes a sane X-Request-Id and replaces a hostile one", async () => {
  const { call } = setup();
  const sane = await call("/livez", { headers: { "x-request-id": "abc-DEF_1.2:3" } });
  equal(sane.headers.get("x-request-id"), "abc-DEF_1.2:3");
  await sane.body?.cancel();
  for (const hostile of ["a b", 'x"y', "x".repeat(129), "", "é"]) {
    const res = await call("/livez", { headers: { "x-request-id": hostile } });
    match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, hostile);
    await res.body?.cancel();
  }
  equal(requestId(null).length, 36);
});

Deno.test("handler() sets safe default headers on every response", async () => {
  const { call } = setup();
  for (const path of ["/", "/livez", "/nope", "/status/500"]) {
    const res = await call(path);
    equal(res.headers.get("x-content-type-options"), "nosniff", path);

    await res.body?.cancel();
  }
});

Deno.test("handler() turns a throwing route into a 500 and an error record with its stack, then carries on", async () => {
  const metrics = new Metrics({ version: "1", startTimeSeconds: 1, rss: () => 1 });
  metrics.render = () => {
    throw new RangeError("scrape exploded");
  };
  const { call, out } = setup({ metrics });
  const res = await call("/metrics");
  equal(res.status, 500);
  equal(await res.text(), "internal server error\n");
  const [error, access] = out.records();
  equal(error.level, "error");
  equal(error.msg, "handler failed");
  match((error.error as { stack: string }).stack, /RangeError: scrape exploded/);
  equal(access.status, 500);
  const after = await call("/livez");
  equal(after.status, 200);
  await after.body?.cancel();
  equal(metrics.inFlight.get(), 0);
});

Deno.test("methodLabel() keeps standard methods and folds the rest into _OTHER", () => {
  equal(methodLabel("GET"), "GET");
  equal(methodLabel("PATCH"), "PATCH");
  equal(methodLabel("BREW"), "_OTHER");
});

Deno.test("handler() streams /stream/{seconds} and writes the access line when the stream ends", async () => {
  const { call, out, metrics, done } = setup();
  const res = await call("/stream/1");
  equal(res.status, 200);
  equal(out.lines.length, 0, "nothing logged while the body is still streaming");
  equal(metrics.inFlight.get(), 1, "a streaming response is in flight");
  equal(await res.text(), "tick 0\ntick 1\ntick 2\n");
  equal(out.lines.length, 0, "nothing logged until Deno reports the response done");
  await done();
  const [access] = out.records();
  equal(access.path, "/stream/1");
  equal(access.status, 200);
  equal(access.bytes, 21);
  ok((access.duration_ms as number) >= 900);
  equal(metrics.inFlight.get(), 0);
});

Deno.test("handler() logs a /stream the client abandons as 499 with the bytes sent", async () => {
  const { call, out, metrics, done } = setup();
  const res = await call("/stream/10");
  const reader = res.body!.getReader();
  equal(new TextDecoder().decode((await reader.read()).value), "tick 0\n");
  await reader.cancel();
  await done();
  await done(); // a second completion event changes nothing: each request completes exactly once
  equal(out.lines.length, 1);
  const [access] = out.records();
  equal(access.status, 499);
  equal(access.bytes, 7);
  equal(metrics.inFlight.get(), 0);
  const bad = await call("/stream/x");
  equal(bad.status, 400);
  await bad.body?.cancel();
  const head = await call("/stream/5", { method: "HEAD" });
  equal(head.status, 200);
  equal(await head.text(), "");
  equal(head.headers.get("content-length"), null, "no length: GET streams a body of unknown length");
  equal(out.records().at(-1)!.bytes, 0);
});

Deno.test("handler() sends a locked-down Content-Security-Policy with the HTML page", async () => {
  const { call } = setup();
  const res = await call("/");
  equal(res.headers.get("content-security-policy"), "default-src 'none'; frame-ancestors 'none'");
  equal(res.headers.get("x-frame-options"), "DENY");
  equal(res.headers.get("referrer-policy"), "no-referrer");
  await res.body?.cancel();
});

/** The status the route table defines for a GET or HEAD of a path (as a URL parser resolves it). */
function routeStatus(pathname: string): number {
  if (["/", "/livez", "/readyz", "/metrics", "/info", "/healthz"].includes(pathname)) return 200;
  const status = /^\/status\/([^/]*)$/.exec(pathname);
  if (status) return parseStatus(status[1]) ?? 400;
  return 404;
}

Deno.test("property: the router answers any path and method with exactly the status its route defines, and one access line", async () => {
  const method = fc.constantFrom("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "get");
  const path = fc.oneof(
    fc.webPath(),
    fc.constantFrom("/", "/livez", "/readyz", "/metrics", "/info", "/healthz", "/status/500", "/status/503"),
    fc.string({ unit: "binary" }).map((s) => "/status/" + encodeURIComponent(s)),
    fc.integer({ min: -1000, max: 100_000 }).map((n) => `/status/${n}`),
    fc.string().map((s) => "/" + encodeURIComponent(s)),
    fc.webPath().map((s) => "/" + s), // "//x/...": a path, though a relative URL would read x as a host
    // What a URL parser rewrites: dot segments (plain, encoded, with backslashes), fragments, queries.
    fc.string({ unit: fc.constantFrom("/", ".", "%2e", "%2E", "\\", "#", "?", "readyz", "livez", "a"), maxLength: 8 })
      .map((s) => "/" + s),
  );
  const { out, metrics, handler } = setupRaw();
  await fc.assert(
    fc.asyncProperty(method, path, async (m, p) => {
      fc.pre(!p.startsWith("/delay/") && !p.startsWith("/stream/")); // those wait by design
      // The URL as Deno.serve builds it, with the target as sent: not normalised as `new Request` would.
      const before = out.lines.length;
      const request = new Request("http://localhost/", { method: m, headers: { host: "localhost" } });
      const res = await handler(request, undefined, `http://localhost${p}`);
      const sent = p.startsWith("/") ? p : "/" + p; // Deno's URL always has a path; an empty one is "/"
      await res.body?.cancel();
      const effective = new Request("http://h/", { method: m }).method; // Fetch upper-cases "get", the wire does not
      const expected = p.includes("#")
        ? 400 // RFC 9112: a request target has no fragment
        : effective !== "GET" && effective !== "HEAD"
        ? 405
        : routeStatus(new URL(`http://h${p}`).pathname);
      equal(res.status, expected, `${m} ${p}`);
      match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
      equal(out.lines.length, before + 1);
      const access = out.records().at(-1)!;
      equal(access.path, sent.split("?")[0], "the log shows the path as sent");
      equal(access.status, res.status);
      equal(metrics.inFlight.get(), 0);
    }),
    { numRuns: 300 },
  );
});

Deno.test("utf8Length() counts UTF-8 bytes, ASCII or not", () => {
  equal(utf8Length("ok\n"), 3);
  equal(utf8Length("é"), 2);
  equal(utf8Length("€"), 3);
  equal(utf8Length("😀"), 4);
  equal(utf8Length(""), 0);
});

Deno.test("requestTarget() takes the path the client sent, never what the Host header shifts", () => {
  const HOST = "bad host header";
  const TARGET = "bad request target";
  // [Deno's request.url, the Host header, the path as sent, the route, why it is refused]
  const cases: [string, string | null, string, string, string?][] = [
    // Deno builds request.url as "http://" + Host + target.
    ["http://x/metrics?/private?token=abc", "x/metrics?", "/private", "/private", HOST],
    ["http://h:8080/livez?x=1", "h:8080", "/livez", "/livez"],
    // The log keeps the path as sent; the router resolves dot segments as a URL parser does.
    ["http://h/a/../livez", "h", "/a/../livez", "/livez"],
    ["http://h/%2e%2e/livez", "h", "/%2e%2e/livez", "/livez"],
    // A path that starts with "//" stays a path: it never names a host that would move the route elsewhere.
    ["http://h//evil.%2e/readyz", "h", "//evil.%2e/readyz", "//evil.%2e/readyz"],
    ["http://h//%E1%83%90", "h", "//%E1%83%90", "//%E1%83%90"],
    // A Host that is valid UTF-8 but not ASCII: Deno's URL has it decoded, the header one character per byte.
    ["http://\u00e9/status/503?/readyz", "\xc3\xa9/status/503?", "/readyz", "/readyz", HOST],
    // Empty, or not UTF-8: Deno puts the listening address in its place; the Host is judged all the same.
    ["http://localhost:8080/livez", "\xff/x?", "/livez", "/livez", HOST],
    ["http://localhost:8080/livez", "", "/livez", "/livez", HOST],
    // No Host (HTTP/1.0): Deno uses the listening address, which is fine.
    ["http://localhost:8080/livez", null, "/livez", "/livez"],
    // An absolute-form target (or HTTP/2's :authority): its authority must be valid and be the Host, if there is one.
    ["http://foo/livez?q", "foo", "/livez", "/livez"],
    ["HTTP://FOO/livez", "foo", "/livez", "/livez"],
    ["https://foo/livez", null, "/livez", "/livez"],
    ["http://foo/livez?q", "other", "/livez", "/livez", HOST],
    ["http://foo:99999/livez", null, "/livez", "/livez", HOST],
    ["http://a*", null, "/", "/", HOST], // HTTP/2 ":path *"
    // Deno ends an absolute-form authority at "/" or "?" only: "http://a#/x" has the authority "a#", path /x.
    ["http://a#/x", null, "/x", "/x", HOST],
    ["http://a#/x", "a", "/x", "/x", HOST],
    // An empty path is "/", and the query never becomes the path or the authority.
    ["http://a?/readyz", "a", "/", "/"],
    ["http://a?x", "a", "/", "/"],
    // Only http and https; no fragment (RFC 9112 3.2), which Deno would otherwise pass on as part of the path.
    ["foo://a/x\\..\\readyz", "a", "/x\\..\\readyz", "/readyz", TARGET],
    ["http://a/a#/../readyz", "a", "/a#/../readyz", "/a", TARGET],
    ["http://a/readyz?x#y", "a", "/readyz", "/readyz", TARGET],
  ];
  for (const [url, host, path, route, problem] of cases) {
    deepStrictEqual(requestTarget(url, host), { path, route, problem }, `${url} with Host ${JSON.stringify(host)}`);
  }
});

Deno.test("validHost() accepts names, IPv4, bracketed IPv6 and ports up to 65535, and nothing else", () => {
  const good = ["x", "example.com", "a-b.c_d~", "10.0.0.1:8080", "[::1]", "[::1]:80", "h:", "%41", "a.:0", "a:000080"];
  for (const host of good) ok(validHost(host), host);
  const bad = [
    "a b",
    "x:99999",
    "[x]",
    "a|b",
    "x/metrics?",
    "x#",
    "user@h",
    "x\\y",
    "a:b:c",
    "H\xe9",
    "[::1",
    "",
    ":80",
    ":",
  ];
  for (const host of [...bad, "[:]", "[.]", "[v1.x]", "a*", "a&b", "a;b", "a\tb", "[::1]x", "x:+80"]) {
    ok(!validHost(host), host);
  }
});

Deno.test("handler() answers a malformed Host with 400, an access line and a metrics series, and closes", async () => {
  const { out, metrics, handler } = setupRaw();
  for (const host of ["a b", "x:99999", "[x]", "a|b", "x/metrics?", "x/status/503?", "x#"]) {
    const res = await handler(
      new Request("http://h/readyz", { headers: { host } }),
      undefined,
      `http://${host}/readyz`,
    );
    equal(res.status, 400, host);
    equal(res.headers.get("connection"), "close", host);
    await res.body?.cancel();
  }
  const access = out.records().filter((r) => r.msg === "access");
  equal(access.length, 7);
  ok(access.every((r) => r.status === 400 && r.path === "/readyz"));
  match(metrics.render(), /^http_requests_total\{method="GET",route="unmatched",code="400"\} 7$/m);
  equal(metrics.inFlight.get(), 0);
});

/** Bytes as the one-character-per-byte string Deno gives header values as. */
const latin1 = (bytes: number[]) => String.fromCharCode(...bytes);

Deno.test("property: on a real Deno.serve, no Host header or request target makes the handler answer or log another route", async () => {
  const { out, metrics, handler } = setupRaw();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  // Bytes a hostile Host or authority is made of: delimiters, UTF-8 (valid or not), and what a valid one holds.
  const hostByte = fc.constantFrom(
    ..."aA08.:-/?#[]@*&%;".split("").map((c) => [c.charCodeAt(0)]),
    [0xc3, 0xa9],
    [0xff],
  );
  // Valid Hosts too (as Kubernetes sends them), so that the accepting path is taken as often as the refusing one.
  const goodHost = fc.constantFrom("a", "A", "localhost", "10.0.0.1:8080", "[::1]:80", "svc.ns.svc.", "a:000080")
    .map((h) => [...new TextEncoder().encode(h)]);
  const hostBytes = (minLength: number) =>
    fc.oneof(goodHost, fc.array(hostByte, { minLength, maxLength: 10 }).map((parts) => parts.flat()));
  const path = fc.constantFrom(
    "/livez",
    "/readyz",
    "/missing",
    "/private?token=abc",
    "/a/../livez",
    "//x/../readyz",
    "//evil.%2e/readyz",
    "/status/418",
    "/a#/../readyz",
    "?/readyz",
    "",
  );
  const target = fc.oneof(
    path.filter((p) => p.startsWith("/")).map((p) => ({
      authority: null as number[] | null,
      scheme: "",
      path: p,
      same: false,
    })),
    // Deno ends an authority at the first "/" or "?" (a "#" stays in it): those are in the paths, so the split is the
    // one generated. With `same`, the authority is the Host's bytes, when they can be one.
    fc.record({
      authority: hostBytes(1).filter((b) => !b.some((c) => c === 47 || c === 63)),
      scheme: fc.constantFrom("http", "HTTP", "https", "foo"),
      path,
      same: fc.boolean(),
    }),
  );
  let answered = 0;
  let accepted = 0;
  let acceptedAbsolute = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.option(hostBytes(0), { nil: null }), target, async (host, t) => {
        const absolute = t.authority !== null;
        const sameAsHost = t.same && host !== null && host.length > 0 && !host.some((c) => c === 47 || c === 63);
        const authorityBytes = sameAsHost ? host : t.authority;
        const targetBytes = absolute ? [...new TextEncoder().encode(`${t.scheme}://`), ...authorityBytes!] : [];
        const request = new Uint8Array([
          ...new TextEncoder().encode("GET "),
          ...targetBytes,
          ...new TextEncoder().encode(`${t.path} HTTP/1.1\r\n`),
          ...(host === null ? [] : [...new TextEncoder().encode("Host: "), ...host, 13, 10]),
          ...new TextEncoder().encode("Connection: close\r\n\r\n"),
        ]);
        const before = out.lines.length;
        const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(await raw(server.addr.port, request))?.[1] ?? 0);
        const label = JSON.stringify(latin1([...request]));
        ok(status !== 500 && status !== 0, `${label}: ${status}`);
        if (out.lines.length === before) {
          equal(status, 400, `${label}: refused by Deno's parser, which answers 400`);
          return;
        }
        answered++;
        equal(out.lines.length, before + 1, label);
        const hostText = host === null ? null : latin1(host).trim();
        const authority = absolute ? latin1(authorityBytes!) : hostText;
        // The oracle: the authority valid, the Host (when sent) the same, http(s) only, no fragment.
        const valid = (authority === null || validHost(authority)) &&
          (!absolute || hostText === null || hostText.toLowerCase() === authority!.toLowerCase()) &&
          (!absolute || /^https?$/i.test(t.scheme)) && !t.path.includes("#");
        const sentPath = t.path.startsWith("/") ? t.path.split("?")[0] : "/";
        const expected = valid ? routeStatus(new URL(`http://h${sentPath}`).pathname) : 400;
        if (valid) accepted++;
        if (valid && absolute) acceptedAbsolute++;
        equal(status, expected, label);
        equal(out.records().at(-1)!.path, sentPath, `${label}: the path as sent`);
      }),
      { numRuns: 250 },
    );
  } finally {
    await server.shutdown();
  }
  ok(answered > 150, `most requests reach the handler (${answered} of 250)`);
  ok(accepted > 50 && acceptedAbsolute > 10, `valid requests served: ${accepted}, absolute-form ${acceptedAbsolute}`);
  // A refused request's target or Host never picks the metrics route label.
  const refused = metrics.render().split("\n").filter((l) =>
    l.startsWith("http_requests_total") && /code="400"/.test(l)
  );
  ok(refused.length > 0 && refused.every((l) => l.includes('route="unmatched"')), refused.join("\n"));
});

Deno.test("handler() tells every client to close its connection once draining", async () => {
  const { call, state } = setup();
  const before = await call("/livez");
  equal(before.headers.get("connection"), null);
  state.draining = true;
  for (const path of ["/livez", "/readyz", "/", "/missing", "/status/500"]) {
    const res = await call(path);
    equal(res.headers.get("connection"), "close", path);
    await res.body?.cancel();
  }
});

Deno.test("handler() refuses requests past maxInFlight with a fast 503, Retry-After and a count; probes still answer", async () => {
  const { out, metrics, handler } = setupRaw({ maxInFlight: 2 });
  const controller = new AbortController();
  const slow = [1, 2].map(() => handler(new Request("http://h/delay/5", { signal: controller.signal })));
  const refused = await handler(new Request("http://h/delay/5"));
  equal(refused.status, 503);
  equal(refused.headers.get("retry-after"), "1");
  equal(refused.headers.get("connection"), "close");
  equal(await refused.text(), "overloaded\n");
  for (const probe of ["/livez", "/healthz", "/readyz", "/metrics"]) {
    const res = await handler(new Request(`http://h${probe}`));
    equal(res.status, 200, probe);
    await res.body?.cancel();
  }
  match(metrics.render(), /^shipshape_requests_rejected_total 1$/m);
  match(metrics.render(), /^http_requests_total\{method="GET",route="\/delay\/:seconds",code="503"\} 1$/m);
  controller.abort();
  await Promise.all(slow);
  equal(metrics.inFlight.get(), 0);
  equal(out.records().filter((r) => r.msg === "access" && r.status === 503).length, 1);
});

Deno.test("handler() answers HEAD with the headers GET sends, on every route", async () => {
  const { call } = setup();
  for (
    const path of ["/", "/livez", "/readyz", "/info", "/metrics", "/missing", "/status/418", "/stream/1", "/delay/0"]
  ) {
    const get = await call(path);
    const head = await call(path, { method: "HEAD" });
    const names = (res: Response) =>
      [...res.headers.keys()].filter((k) => k !== "x-request-id" && k !== "content-length").sort();
    deepStrictEqual(names(head), names(get), path);
    equal(head.status, get.status, path);
    await head.body?.cancel(); // Deno.serve sends no body for HEAD (and the length of GET's); the real server test checks it
    await get.body?.cancel();
  }
});

Deno.test("handler() logs a UTF-8 user agent as UTF-8, not as one character per byte", async () => {
  const { out, handler } = setupRaw();
  // Deno hands header values over one character per byte: "é" arrives as "\xc3\xa9".
  const res = await handler(new Request("http://h/livez", { headers: { "user-agent": "caf\xc3\xa9" } }));
  await res.body?.cancel();
  equal(out.records().at(-1)!.user_agent, "café");
  equal(headerText("plain"), "plain");
  equal(headerText("\xff"), "\ufffd");
});
