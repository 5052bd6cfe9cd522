/**
 * Observability end to end: Prometheus's own linter (promtool) on the exposition, a real Prometheus scraping the
 * real server and answering an operator's queries, and the access line's trace ids against the exported spans.
 * Needs prometheus and promtool: installed from apt by tools/prometheus.sh when missing (as root), else a failure.
 */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { Metrics } from "./metrics.ts";
import { CollectorStub, type ExportedSpan } from "./collector_stub.ts";
import { freePort, get, type Record, ServerProcess, sleep } from "./testing.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** Installs prometheus and promtool through tools/prometheus.sh when either is missing; throws when it cannot. */
async function ensurePrometheus(): Promise<void> {
  const which = await new Deno.Command("sh", {
    args: ["-c", "command -v prometheus && command -v promtool"],
    stdout: "null",
    stderr: "null",
  }).output();
  if (which.success) return;
  const install = await new Deno.Command("bash", { args: ["tools/prometheus.sh"], cwd: ROOT, stdout: "inherit" })
    .output();
  if (!install.success) {
    throw new Error(`prometheus and promtool are missing and tools/prometheus.sh failed (exit ${install.code})`);
  }
}

/** Runs `promtool check metrics` on an exposition; its exit code and everything it printed. */
async function promtoolCheck(exposition: string): Promise<{ code: number; output: string }> {
  await ensurePrometheus();
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(exposition));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

/** One element of a PromQL instant vector, as /api/v1/query returns it. */
interface Sample {
  metric: { [label: string]: string };
  value: [number, string];
}

/** The scrape interval of the test Prometheus. */
const SCRAPE_INTERVAL_MS = 250;

/** A real Prometheus server scraping the given targets, with its own temporary storage, on 127.0.0.1. */
class PrometheusProcess {
  stderr = "";
  readonly port = freePort();
  #dir: string;
  #child: Deno.ChildProcess;
  #stderrDone: Promise<void>;
  #client = Deno.createHttpClient({});

  /** Starts Prometheus with one scrape job per entry of `jobs` (job name to host:port). */
  constructor(dir: string, jobs: { [job: string]: string }) {
    this.#dir = dir;
    const config = [
      "global:",
      `  scrape_interval: ${SCRAPE_INTERVAL_MS}ms`,
      `  scrape_timeout: ${SCRAPE_INTERVAL_MS}ms`,
      "scrape_configs:",
      ...Object.entries(jobs).flatMap(([job, target]) => [
        `  - job_name: ${job}`,
        "    static_configs:",
        `      - targets: ["${target}"]`,
      ]),
    ].join("\n") + "\n";
    Deno.writeTextFileSync(`${dir}/prometheus.yml`, config);
    this.#child = new Deno.Command("prometheus", {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${this.port}`,
        "--log.level=warn",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#stderrDone = this.#readStderr();
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) this.stderr += chunk;
  }

  /** Starts Prometheus in a fresh temporary directory and waits until it answers queries. */
  static async start(jobs: { [job: string]: string }): Promise<PrometheusProcess> {
    await ensurePrometheus();
    const prometheus = new PrometheusProcess(Deno.makeTempDirSync({ prefix: "shipshape-prometheus-" }), jobs);
    try {
      await prometheus.until("Prometheus ready", async () => {
        const res = await fetch(`http://127.0.0.1:${prometheus.port}/-/ready`, { client: prometheus.#client })
          .catch(() => undefined);
        await res?.body?.cancel();
        return res?.status === 200;
      });
    } catch (error) {
      await prometheus.stop();
      throw error;
    }
    return prometheus;
  }

  /** Evaluates a PromQL expression (at `time`, seconds since the epoch, or now) and returns the vector. */
  async query(expr: string, time?: number): Promise<Sample[]> {
    const params = new URLSearchParams({ query: expr });
    if (time !== undefined) params.set("time", time.toFixed(3));
    const res = await fetch(`http://127.0.0.1:${this.port}/api/v1/query?${params}`, { client: this.#client });
    const body = await res.json();
    if (body.status !== "success") throw new Error(`query ${expr} failed: ${JSON.stringify(body)}`);
    if (body.data.resultType !== "vector") throw new Error(`query ${expr} gave a ${body.data.resultType}`);
    return body.data.result;
  }

  /** The single value of an expression that must give exactly one sample. */
  async scalar(expr: string, time?: number): Promise<number> {
    const result = await this.query(expr, time);
    if (result.length !== 1) throw new Error(`query ${expr} gave ${result.length} samples: ${JSON.stringify(result)}`);
    return Number(result[0].value[1]);
  }

  /** Polls `check` until it is true; fails after `ms` naming `what` (and the last answer, if given). */
  async until(what: string, check: () => Promise<boolean>, ms = 15_000, last?: () => unknown): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) {
        throw new Error(`${what}: not within ${ms} ms; last answer: ${JSON.stringify(last?.())}; ${this.stderr}`);
      }
      await sleep(50);
    }
  }

  /** Stops Prometheus (SIGTERM), waits for it, and removes its directory. */
  async stop(): Promise<void> {
    this.#child.kill("SIGTERM");
    await this.#child.status;
    await this.#stderrDone;
    this.#client.close();
    Deno.removeSync(this.#dir, { recursive: true });
  }
}

/** `sum by (route, code) (...)` answers as "route code" -> value. */
function byRouteAndCode(samples: Sample[]): { [key: string]: number } {
  const out: { [key: string]: number } = {};
  for (const s of samples) out[`${s.metric.route} ${s.metric.code}`] = Number(s.value[1]);
  return out;
}

/** Sends `count` GETs to `path` on fresh connections, all at once, and checks their status. */
async function send(server: ServerProcess, path: string, count: number, status: number): Promise<void> {
  const answers = await Promise.all(Array.from({ length: count }, async () => {
    using client = Deno.createHttpClient({});
    const res = await fetch(server.url(path), { client });
    await res.body?.cancel();
    return res.status;
  }));
  deepStrictEqual(answers, Array(count).fill(status), path);
}

/** Starts GETs to `path` that the caller aborts later; each settles as "aborted" (or "answered"). */
function hold(server: ServerProcess, path: string, count: number): { abort(): void; settled: Promise<string[]> } {
  const controller = new AbortController();
  const clients = Array.from({ length: count }, () => Deno.createHttpClient({}));
  const settled = Promise.all(
    clients.map((client) =>
      fetch(server.url(path), { client, signal: controller.signal }).then(
        async (res) => {
          await res.body?.cancel();
          return "answered";
        },
        () => "aborted",
      ).finally(() => client.close())
    ),
  );
  return { abort: () => controller.abort(), settled };
}

/** Waits until the server has written `count` access lines for `path` with `status`. */
async function accessLines(server: ServerProcess, path: string, status: number, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (server.access(path).filter((r) => r.status === status).length < count) {
    if (Date.now() > deadline) throw new Error(`no ${count} access lines ${path} ${status}: ${server.lines}`);
    await sleep(20);
  }
}

Deno.test("promtool check metrics finds nothing to report in Metrics.render(), and does report a broken exposition", async () => {
  const metrics = new Metrics({ version: "1.2.3", startTimeSeconds: 1700000000.25, rss: () => 4096 });
  metrics.record("GET", "/", 200, 0.001);
  metrics.record("HEAD", "/", 200, 0.0005);
  metrics.record("GET", "/delay/:seconds", 499, 1.2);
  metrics.record("GET", "/status/:code", 503, 0.002);
  metrics.record("_OTHER", "unmatched", 405, 0.0001);
  metrics.record("GET", "unmatched", 404, 30);
  metrics.inFlight.add(2);
  const checked = await promtoolCheck(metrics.render());
  deepStrictEqual(checked, { code: 0, output: "" });

  // The check can fail: promtool reports a counter without the _total suffix, and a malformed line.
  const lint = await promtoolCheck("# HELP x Things.\n# TYPE x counter\nx 1\n");
  equal(lint.code, 3);
  match(lint.output, /should have "_total" suffix/);
  const broken = await promtoolCheck(metrics.render().replace("http_requests_in_flight 2", "http_requests_in_flight"));
  ok(broken.code !== 0, broken.output);
});

Deno.test("promtool check metrics finds nothing to report in the live /metrics after traffic, a 499 and a 503", async () => {
  const server = await ServerProcess.start();
  try {
    for (const [path, status] of [["/", 200], ["/livez", 200], ["/readyz", 200], ["/info", 200], ["/missing", 404]]) {
      await send(server, path as string, 2, status as number);
    }
    await send(server, "/status/503", 3, 503);
    await send(server, "/delay/nope", 1, 400);
    await send(server, "/stream/0", 1, 200);
    const held = hold(server, "/delay/2", 1);
    await sleep(100); // the request reaches the handler (the 499 below proves it did)
    held.abort();
    deepStrictEqual(await held.settled, ["aborted"]);
    await accessLines(server, "/delay/2", 499, 1);

    const exposition = (await get(server.url("/metrics"))).text_;
    match(exposition, /^http_requests_total\{method="GET",route="\/delay\/:seconds",code="499"\} 1$/m);
    match(exposition, /^http_requests_total\{method="GET",route="\/status\/:code",code="503"\} 3$/m);
    match(exposition, /^http_requests_total\{method="GET",route="unmatched",code="404"\} 2$/m);
    deepStrictEqual(await promtoolCheck(exposition), { code: 0, output: "" });
  } finally {
    server.kill("SIGTERM");
    equal(await server.exit(), 0);
  }
});

/** What kube-state-metrics exposes for two pods, one ready and one not: the series the readiness alert reads. */
const KUBE_STATE_METRICS = [
  "# HELP kube_pod_status_ready Describes whether the pod is ready to serve requests.",
  "# TYPE kube_pod_status_ready gauge",
  ...["true", "false", "unknown"].map((c) =>
    `kube_pod_status_ready{namespace="web",pod="shipshape-7d9f-ready",uid="u1",condition="${c}"} ${
      c === "true" ? 1 : 0
    }`
  ),
  ...["true", "false", "unknown"].map((c) =>
    `kube_pod_status_ready{namespace="web",pod="shipshape-7d9f-stuck",uid="u2",condition="${c}"} ${
      c === "false" ? 1 : 0
    }`
  ),
].join("\n") + "\n";

/** The queries of docs/observability.md, as written there (RANGE is the window; the docs say 5m). */
const QUERIES = {
  requestsByRouteAndCode: "sum by (route, code) (http_requests_total)",
  errorRatio: 'sum(rate(http_requests_total{code=~"5.."}[RANGE])) / sum(rate(http_requests_total[RANGE]))',
  p99: "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[RANGE])))",
  inFlight: "sum(http_requests_in_flight)",
  podNotReady: 'sum by (namespace, pod) (kube_pod_status_ready{condition="true", pod=~"shipshape-.*"}) == 0',
};

Deno.test("a real Prometheus scraping the server answers an operator's queries to match the traffic sent", async () => {
  const server = await ServerProcess.start();
  const kubeStateMetrics = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Response(KUBE_STATE_METRICS, { headers: { "content-type": "text/plain; version=0.0.4" } }),
  );
  let prometheus: PrometheusProcess | undefined;
  try {
    // Warm-up: one request of every kind before the first scrape, so that every series the queries read exists
    // from the first sample on (a counter's first sample is its baseline: rate() cannot see what came before).
    const traffic: [string, number, number][] = [
      ["/", 200, 6],
      ["/livez", 200, 5],
      ["/status/503", 503, 4],
      ["/status/500", 500, 2],
      ["/status/404", 404, 3],
      ["/delay/0.3", 200, 10],
    ];
    for (const [path, status] of traffic) await send(server, path, 1, status);
    await send(server, "/metrics", 1, 200);

    prometheus = await PrometheusProcess.start({
      shipshape: `127.0.0.1:${server.port}`,
      "kube-state-metrics": `127.0.0.1:${kubeStateMetrics.addr.port}`,
    });
    const p = prometheus;
    let last: unknown;
    await p.until(
      "both targets up",
      async () => {
        last = await p.query("up");
        return (last as Sample[]).length === 2 && (last as Sample[]).every((s) => s.value[1] === "1");
      },
      15_000,
      () => last,
    );
    // t0: the newest scrape, taken before any of the traffic below (it was stored before this query returned).
    const t0 = await p.scalar('timestamp(up{job="shipshape"})');
    const metricsAt0 = await p.scalar('http_requests_total{route="/metrics"}', t0);

    for (const [path, status, count] of traffic) await send(server, path, count, status);

    // Requests per route and code: the warm-up plus the traffic, exactly (the scrapes themselves aside).
    const expected: { [key: string]: number } = {
      "/ 200": 7,
      "/livez 200": 6,
      "/status/:code 503": 5,
      "/status/:code 500": 3,
      "/status/:code 404": 4,
      "/delay/:seconds 200": 11,
    };
    let counts: { [key: string]: number } = {};
    await p.until(
      "the traffic in Prometheus",
      async () => {
        counts = byRouteAndCode(await p.query(QUERIES.requestsByRouteAndCode));
        delete counts["/metrics 200"];
        return Object.keys(counts).length === Object.keys(expected).length &&
          Object.keys(expected).every((key) => counts[key] === expected[key]);
      },
      15_000,
      () => counts,
    );
    const t1 = await p.scalar('timestamp(up{job="shipshape"})');
    const metricsAt1 = await p.scalar('http_requests_total{route="/metrics"}', t1);
    // The window from the scrape before the traffic to the first scrape that holds all of it: with both ends on a
    // sample, rate() has nothing to extrapolate, so the answers are exact.
    const range = `${Math.round((t1 - t0) * 1000)}ms`;
    const windowed = (query: string) => query.replaceAll("RANGE", range);

    // The error ratio: 5xx among all requests in the window, Prometheus's own scrapes included.
    const errors = 4 + 2;
    const all = 6 + 5 + 4 + 2 + 3 + 10 + (metricsAt1 - metricsAt0);
    const ratio = await p.scalar(windowed(QUERIES.errorRatio), t1);
    ok(Math.abs(ratio - errors / all) < 1e-9, `error ratio ${ratio}, expected ${errors}/${all}`);

    // p99 of /delay/0.3: all ten in the (0.25, 0.5] bucket, so Prometheus puts the p99 in it.
    const quantiles = await p.query(windowed(QUERIES.p99), t1);
    const delayP99 = Number(quantiles.find((s) => s.metric.route === "/delay/:seconds")?.value[1]);
    ok(delayP99 > 0.25 && delayP99 <= 0.5, `p99 of /delay/0.3: ${delayP99}`);
    const rootP99 = Number(quantiles.find((s) => s.metric.route === "/")?.value[1]);
    ok(rootP99 > 0 && rootP99 <= 0.25, `p99 of /: ${rootP99}`);

    // In flight: three requests held open. The scrape itself is in flight while /metrics renders, so it counts 1.
    const held = hold(server, "/delay/10", 3);
    let inFlight = NaN;
    await p.until(
      "3 held requests in flight",
      async () => {
        inFlight = await p.scalar(QUERIES.inFlight);
        return inFlight === 3 + 1;
      },
      15_000,
      () => inFlight,
    );
    held.abort();
    deepStrictEqual(await held.settled, ["aborted", "aborted", "aborted"]);
    await p.until(
      "the held requests gone, as 499s",
      async () => {
        inFlight = await p.scalar(QUERIES.inFlight);
        const gone = await p.query('http_requests_total{route="/delay/:seconds",code="499"}');
        return inFlight === 1 && gone.length === 1 && gone[0].value[1] === "3";
      },
      15_000,
      () => inFlight,
    );

    // A pod that stays not ready (kube-state-metrics' series): the stuck pod, and only it.
    const notReady = await p.query(QUERIES.podNotReady);
    deepStrictEqual(notReady.map((s) => s.metric), [{ namespace: "web", pod: "shipshape-7d9f-stuck" }]);
    equal(p.stderr.match(/level=error/g), null, p.stderr);
  } finally {
    await prometheus?.stop();
    await kubeStateMetrics.shutdown();
    server.kill("SIGTERM");
    equal(await server.exit(), 0);
  }
});

/** The access record of the one request to `path`. */
function accessOf(server: ServerProcess, path: string): Record {
  const records = server.access(path);
  equal(records.length, 1, `one access line for ${path}: ${server.lines.join("\n")}`);
  return records[0];
}

/** The one exported server span of the request to `path`. */
function spanOf(collector: CollectorStub, path: string): ExportedSpan {
  const spans = collector.serverSpans(path);
  equal(spans.length, 1, `one server span for ${path}: ${JSON.stringify(collector.spans())}`);
  return spans[0];
}

const PARENT = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
const TRACEPARENT = `00-${PARENT.traceId}-${PARENT.spanId}-01`;

Deno.test("with OTEL_DENO=true each JSON access line ends with the trace_id and span_id of its exported span", async () => {
  const collector = new CollectorStub();
  try {
    const server = await ServerProcess.start(collector.env());
    try {
      await send(server, "/status/201", 1, 201);
      const res = await fetch(server.url("/status/202"), { headers: { traceparent: TRACEPARENT } });
      await res.body?.cancel();
      equal(res.status, 202);
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
    equal(server.stderr, "");
    for (const path of ["/status/201", "/status/202"]) {
      const record = accessOf(server, path);
      const span = spanOf(collector, path);
      deepStrictEqual(Object.keys(record).slice(-2), ["trace_id", "span_id"], `${path}: the last two fields`);
      deepStrictEqual({ trace_id: record.trace_id, span_id: record.span_id }, {
        trace_id: span.traceId,
        span_id: span.spanId,
      }, path);
    }
    // The incoming traceparent is continued: its trace id in the log line and in the span (a child of the caller's).
    equal(accessOf(server, "/status/202").trace_id, PARENT.traceId);
    equal(spanOf(collector, "/status/202").parentSpanId, PARENT.spanId);
  } finally {
    await collector.close();
  }
});

/** Starts the server with LOG_FORMAT=text and returns it with its port (read from the text "listening" line). */
async function startText(env: { [key: string]: string }): Promise<ServerProcess> {
  const server = new ServerProcess({ ...env, LOG_FORMAT: "text" });
  const deadline = Date.now() + 10_000;
  while (!server.lines.some((l) => / listening .*port=\d+/.test(l))) {
    if (Date.now() > deadline) throw new Error(`no listening line: ${server.lines} ${server.stderr}`);
    await sleep(20);
  }
  server.port = Number(/ listening .*port=(\d+)/.exec(server.lines.join("\n"))![1]);
  return server;
}

Deno.test("with OTEL_DENO=true each text access line ends with trace_id=<32 hex> span_id=<16 hex> of its span", async () => {
  const collector = new CollectorStub();
  try {
    const server = await startText(collector.env());
    try {
      const res = await fetch(server.url("/status/203"), { headers: { traceparent: TRACEPARENT } });
      await res.body?.cancel();
      equal(res.status, 203);
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
    const line = server.lines.find((l) => l.includes('"GET /status/203"')) ?? "";
    const ids = / trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16})$/.exec(line);
    ok(ids, `the access line ends with the trace ids: ${line}`);
    const span = spanOf(collector, "/status/203");
    deepStrictEqual([ids[1], ids[2]], [span.traceId, span.spanId]);
    equal(ids[1], PARENT.traceId);
  } finally {
    await collector.close();
  }
});

Deno.test("with OpenTelemetry off the access lines carry no trace fields and nothing is exported", async () => {
  const collector = new CollectorStub();
  try {
    const { OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL } = collector.env();
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL };
    const json = await ServerProcess.start(env);
    const text = await startText(env);
    try {
      for (const server of [json, text]) {
        const res = await fetch(server.url("/status/201"), { headers: { traceparent: TRACEPARENT } });
        await res.body?.cancel();
        equal(res.status, 201);
      }
    } finally {
      for (const server of [json, text]) {
        server.kill("SIGTERM");
        equal(await server.exit(), 0);
      }
    }
    const record = accessOf(json, "/status/201");
    equal("trace_id" in record || "span_id" in record, false, JSON.stringify(record));
    equal(record.request_id, Object.values(record).at(-1), "the JSON line still ends with request_id");
    const line = text.lines.find((l) => l.includes('"GET /status/201"')) ?? "";
    match(line, / dur_ms=[\d.]+$/);
    deepStrictEqual(collector.exports, []);
  } finally {
    await collector.close();
  }
});

Deno.test("docs/observability.md shows the queries the tests run, and its alerting rules pass promtool check rules", async () => {
  const doc = Deno.readTextFileSync(new URL("./docs/observability.md", import.meta.url));
  for (const [name, query] of Object.entries(QUERIES)) {
    ok(doc.includes("\n" + query.replaceAll("RANGE", "5m") + "\n"), `${name} as a query block in the docs`);
  }
  const rules = doc.split("```yaml\n").map((block) => block.split("```")[0]).find((b) => b.startsWith("groups:"));
  ok(rules, "an alerting rules block");
  await ensurePrometheus();
  const dir = Deno.makeTempDirSync({ prefix: "shipshape-rules-" });
  try {
    Deno.writeTextFileSync(`${dir}/rules.yml`, rules);
    const checked = await new Deno.Command("promtool", { args: ["check", "rules", `${dir}/rules.yml`] }).output();
    const output = new TextDecoder().decode(checked.stdout) + new TextDecoder().decode(checked.stderr);
    equal(checked.code, 0, output);
    match(output, /SUCCESS: 3 rules found/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
