/** Prometheus metrics: the few counters, gauges and histograms the server keeps, and their text exposition. */

/** Latency buckets in seconds (Prometheus client defaults). */
export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Escapes a label value for the exposition format. */
export function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : "\\" + c);
}

function labelText(names: readonly string[], values: readonly string[], extra = ""): string {
  const pairs = names.map((n, i) => `${n}="${escapeLabel(values[i])}"`);
  if (extra) pairs.push(extra);
  return pairs.length ? `{${pairs.join(",")}}` : "";
}

function formatNumber(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

interface Metric {
  render(lines: string[]): void;
}

function header(lines: string[], name: string, help: string, type: string): void {
  lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
}

/** A counter with a fixed set of label names. */
export class Counter implements Metric {
  #values = new Map<string, { labels: string[]; value: number }>();
  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[] = []) {}

  /** Adds `by` (default 1) to the series with these label values. */
  inc(labels: readonly string[] = [], by = 1): void {
    this.series(labels).value += by;
  }

  /** The series with these label values, created at 0 when new (callers on a hot path keep it). */
  series(labels: readonly string[]): { value: number } {
    const key = labels.join("\u0000");
    let entry = this.#values.get(key);
    if (!entry) {
      entry = { labels: [...labels], value: 0 };
      this.#values.set(key, entry);
    }
    return entry;
  }

  /** The current value of one series (0 when never touched). */
  get(labels: readonly string[] = []): number {
    return this.#values.get(labels.join("\u0000"))?.value ?? 0;
  }

  render(lines: string[]): void {
    header(lines, this.name, this.help, "counter");
    for (const { labels, value } of this.#values.values()) {
      lines.push(`${this.name}${labelText(this.labelNames, labels)} ${formatNumber(value)}`);
    }
  }
}

/**
 * A single series whose value is set, or read from a function at scrape time. With type "counter" it
 * exposes a count kept elsewhere (the function must only grow).
 */
export class Gauge implements Metric {
  #value = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly collect?: () => number,
    readonly labels: Record<string, string> = {},
    readonly type: "gauge" | "counter" = "gauge",
  ) {}

  /** Sets the value. */
  set(value: number): void {
    this.#value = value;
  }

  /** Adds `by` to the value (negative to subtract). */
  add(by: number): void {
    this.#value += by;
  }

  /** The current value. */
  get(): number {
    return this.collect ? this.collect() : this.#value;
  }

  render(lines: string[]): void {
    header(lines, this.name, this.help, this.type);
    const names = Object.keys(this.labels);
    lines.push(`${this.name}${labelText(names, Object.values(this.labels))} ${formatNumber(this.get())}`);
  }
}

/** One label set's bucket counts, sum and count. */
export interface HistogramSeries {
  labels: string[];
  counts: number[];
  sum: number;
  count: number;
}

/** A histogram with a fixed set of label names and bucket bounds. */
export class Histogram implements Metric {
  #series = new Map<string, HistogramSeries>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
    readonly buckets: readonly number[] = DEFAULT_BUCKETS,
  ) {}

  /** Records one observation in the series with these label values. */
  observe(labels: readonly string[], value: number): void {
    this.observeIn(this.series(labels), value);
  }

  /** The series with these label values, created empty when new (callers on a hot path keep it). */
  series(labels: readonly string[]): HistogramSeries {
    const key = labels.join("\u0000");
    let s = this.#series.get(key);
    if (!s) {
      s = { labels: [...labels], counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    return s;
  }

  /** Records one observation in a series obtained from series(). */
  observeIn(s: HistogramSeries, value: number): void {
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) {
        s.counts[i]++;
        break;
      }
    }
    s.sum += value;
    s.count++;
  }

  render(lines: string[]): void {
    header(lines, this.name, this.help, "histogram");
    for (const s of this.#series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += s.counts[i];
        const le = `le="${formatNumber(this.buckets[i])}"`;
        lines.push(`${this.name}_bucket${labelText(this.labelNames, s.labels, le)} ${cumulative}`);
      }
      lines.push(`${this.name}_bucket${labelText(this.labelNames, s.labels, 'le="+Inf"')} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(this.labelNames, s.labels)} ${formatNumber(s.sum)}`);
      lines.push(`${this.name}_count${labelText(this.labelNames, s.labels)} ${s.count}`);
    }
  }
}

/** What createMetrics needs to know about the process. */
export interface MetricsOptions {
  version: string;
  /** Process start, in seconds since the epoch. */
  startTimeSeconds: number;
  /** Resident set size in bytes. */
  rss?: () => number;
  /** Log lines lost to a failed stdout. */
  logLinesLost?: () => number;
  /** Waits of the log writer for a full non-blocking stdout. */
  logWriteWaits?: () => number;
}

/** The server's metrics, and its Prometheus text exposition. */
export class Metrics {
  /** Requests by method, route template and status code. */
  readonly requests = new Counter("http_requests_total", "HTTP requests answered.", ["method", "route", "code"]);
  /** Request durations by method and route template. */
  readonly duration = new Histogram(
    "http_request_duration_seconds",
    "Time from request to response, in seconds.",
    ["method", "route"],
  );
  /** Requests being handled now. */
  readonly inFlight = new Gauge("http_requests_in_flight", "Requests being handled now.");
  #all: Metric[];
  #recorded = new Map<string, { count: { value: number }; duration: HistogramSeries }>();

  constructor(options: MetricsOptions) {
    const rss = options.rss ?? (() => Deno.memoryUsage().rss);
    const lost = options.logLinesLost ?? (() => 0);
    const waits = options.logWriteWaits ?? (() => 0);
    this.#all = [
      this.requests,
      this.duration,
      this.inFlight,
      new Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", rss),
      new Gauge(
        "process_start_time_seconds",
        "Start time of the process since the epoch, in seconds.",
        () => options.startTimeSeconds,
      ),
      new Gauge(
        "shipshape_log_lines_lost_total",
        "Log lines that could not be written because stdout failed.",
        lost,
        {},
        "counter",
      ),
      new Gauge(
        "shipshape_log_write_waits_total",
        "Times a log write waited for a full non-blocking stdout (back-pressure from the log reader).",
        waits,
        {},
        "counter",
      ),
      new Gauge("shipshape_build_info", "Build information; the value is always 1.", () => 1, {
        version: options.version,
        deno: Deno.version.deno,
      }),
    ];
  }

  /** Records one answered request. */
  record(method: string, route: string, status: number, seconds: number): void {
    // One string key and one lookup per request instead of label arrays: this runs on every request, and the
    // label sets are bounded (methods folded, route templates, status codes).
    const key = method + " " + route + " " + status;
    let series = this.#recorded.get(key);
    if (!series) {
      series = {
        count: this.requests.series([method, route, String(status)]),
        duration: this.duration.series([method, route]),
      };
      this.#recorded.set(key, series);
    }
    series.count.value++;
    this.duration.observeIn(series.duration, seconds);
  }

  /** The text exposition (format 0.0.4). */
  render(): string {
    const lines: string[] = [];
    for (const m of this.#all) m.render(lines);
    return lines.join("\n") + "\n";
  }
}
