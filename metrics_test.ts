import { equal, match, ok } from "node:assert/strict";
import { Collected, Counter, escapeLabel, Gauge, Histogram, Metrics } from "./metrics.ts";

function lines(m: { render(lines: string[]): void }): string[] {
  const out: string[] = [];
  m.render(out);
  return out;
}

Deno.test("Counter adds per label set and renders HELP, TYPE and one sample per series", () => {
  const c = new Counter("x_total", "Things.", ["a"]);
  c.inc(["1"]);
  c.inc(["1"], 2);
  c.inc(["2"]);
  equal(c.get(["1"]), 3);
  equal(c.get(["3"]), 0);
  equal(lines(c).join("\n"), '# HELP x_total Things.\n# TYPE x_total counter\nx_total{a="1"} 3\nx_total{a="2"} 1');
});

Deno.test("Gauge renders its set value; Collected renders the value of its function, with its type and labels", () => {
  const g = new Gauge("g", "G.");
  g.set(5);
  g.add(-2);
  equal(lines(g)[2], "g 3");
  const collected = new Collected({
    name: "h_total",
    help: "H.",
    type: "counter",
    collect: () => 42,
    labels: { v: "1" },
  });
  equal(lines(collected).join("\n"), '# HELP h_total H.\n# TYPE h_total counter\nh_total{v="1"} 42');
});

Deno.test("Histogram renders cumulative buckets, +Inf, sum and count", () => {
  const h = new Histogram("d", "D.", ["r"], [0.1, 1]);
  h.observe(["/"], 0.05);
  h.observe(["/"], 0.5);
  h.observe(["/"], 5);
  equal(
    lines(h).slice(2).join("\n"),
    [
      'd_bucket{r="/",le="0.1"} 1',
      'd_bucket{r="/",le="1"} 2',
      'd_bucket{r="/",le="+Inf"} 3',
      'd_sum{r="/"} 5.55',
      'd_count{r="/"} 3',
    ].join("\n"),
  );
});

Deno.test("escapeLabel() escapes backslash, quote and newline", () => {
  equal(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
});

Deno.test("Metrics.render() exposes requests, durations, in-flight, memory, start time and build info", () => {
  const m = new Metrics({
    version: "9.9.9",
    startTimeSeconds: 1700000000.5,
    rss: () => 1234,
    log: { lost: 2, waits: 3, dropped: 4 },
  });
  m.record("GET", "/delay/:seconds", 200, 0.2);
  m.inFlight.add(1);
  const text = m.render();
  match(text, /^http_requests_total\{method="GET",route="\/delay\/:seconds",code="200"\} 1$/m);
  match(text, /^http_request_duration_seconds_bucket\{method="GET",route="\/delay\/:seconds",le="0.25"\} 1$/m);
  match(text, /^http_requests_in_flight 1$/m);
  match(text, /^process_resident_memory_bytes 1234$/m);
  match(text, /^process_start_time_seconds 1700000000.5$/m);
  match(text, /^# TYPE shipshape_log_lines_lost_total counter$/m);
  match(text, /^shipshape_log_lines_lost_total 2$/m);
  match(text, /^shipshape_log_write_waits_total 3$/m);
  match(text, /^shipshape_log_lines_dropped_total 4$/m);
  match(text, /^shipshape_listening 0$/m);
  match(text, /^shipshape_requests_rejected_total 0$/m);
  match(text, new RegExp(`^shipshape_build_info\\{version="9.9.9",deno="${Deno.version.deno}"\\} 1$`, "m"));
  ok(text.endsWith("\n"));
  // The grammar itself is checked by Prometheus's own linter: observability_test.ts runs promtool on this output.
});
