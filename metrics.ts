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

  /** The series with these label values, created at 0 when new. */
  series(labels: readonly string[]): { value: number } {
    return this.keyed(labels.join("\u0000"), () => labels);
  }

  /** The series under `key` (its label values joined by NUL); `labels` makes them only when the series is new. */
  keyed(key: string, labels: () => readonly string[]): { value: number } {
    let entry = this.#values.get(key);
    if (!entry) {
      entry = { labels: [...labels()], value: 0 };
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

/** A single series whose value the server sets. */
export class Gauge implements Metric {
  #value = 0;
  constructor(readonly name: string, readonly help: string) {}

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
    return this.#value;
  }

  render(lines: string[]): void {
    header(lines, this.name, this.help, "gauge");
    lines.push(`${this.name} ${formatNumber(this.#value)}`);
  }
}

/** How a Collected metric is declared. */
export interface CollectedOptions {
  name: string;
  help: string;
  /** "counter" for a count kept elsewhere that only grows, "gauge" for anything else. */
  type: "gauge" | "counter";
  /** Read at scrape time. */
  collect: () => number;
  labels?: Record<string, string>;
}

/** A single series read from a function at scrape time: a value or a count kept elsewhere. */
export class Collected implements Metric {
  constructor(readonly options: CollectedOptions) {}

  render(lines: string[]): void {
    const { name, help, type, collect, labels = {} } = this.options;
    header(lines, name, help, type);
    lines.push(`${name}${labelText(Object.keys(labels), Object.values(labels))} ${formatNumber(collect())}`);
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

  /** The series with these label values, created empty when new. */
  series(labels: readonly string[]): HistogramSeries {
    return this.keyed(labels.join("\u0000"), () => labels);
  }

  /** The series under `key` (its label values joined by NUL); `labels` makes them only when the series is new. */
  keyed(key: string, labels: () => readonly string[]): HistogramSeries {
    let s = this.#series.get(key);
    if (!s) {
      s = { labels: [...labels()], counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
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

/** What Metrics needs to know about the process and the log writer. */
export interface MetricsOptions {
  version: string;
  /** Process start, in seconds since the epoch. */
  startTimeSeconds: number;
  /** Resident set size in bytes. */
  rss?: () => number;
  /** The log writer's counts (LineWriter's fields). */
  log?: { lost: number; waits: number; dropped: number };
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
  /** Requests refused with 503 because MAX_IN_FLIGHT requests were in flight. */
  readonly rejected = new Counter(
    "shipshape_requests_rejected_total",
    "Requests refused with 503 because MAX_IN_FLIGHT requests were in flight.",
  );
  /** 1 while the server accepts connections; 0 before, while it listens again after an accept failure, and after the drain began. */
  readonly listening = new Gauge(
    "shipshape_listening",
    "1 while the server accepts connections, 0 while it does not (listening again after an accept failure, draining).",
  );
  #all: Metric[];

  constructor(options: MetricsOptions) {
    const rss = options.rss ?? (() => Deno.memoryUsage().rss);
    const log = options.log ?? { lost: 0, waits: 0, dropped: 0 };
    this.rejected.inc([], 0); // exposed at 0 from the start, so a rate over it has a first sample
    this.#all = [
      this.requests,
      this.duration,
      this.inFlight,
      this.rejected,
      this.listening,
      new Collected({
        name: "process_resident_memory_bytes",
        help: "Resident memory size in bytes.",
        type: "gauge",
        collect: rss,
      }),
      new Collected({
        name: "process_start_time_seconds",
        help: "Start time of the process since the epoch, in seconds.",
        type: "gauge",
        collect: () => options.startTimeSeconds,
      }),
      new Collected({
        name: "shipshape_log_lines_lost_total",
        help: "Log lines that could not be written because stdout failed.",
        type: "counter",
        collect: () => log.lost,
      }),
      new Collected({
        name: "shipshape_log_lines_dropped_total",
        help: "Log lines dropped because the log buffer was full (LOG_BUFFER_FULL=drop).",
        type: "counter",
        collect: () => log.dropped,
      }),
      new Collected({
        name: "shipshape_log_write_waits_total",
        help: "Times logging waited for stdout: a full log buffer, or a full non-blocking stdout.",
        type: "counter",
        collect: () => log.waits,
      }),
      new Collected({
        name: "shipshape_build_info",
        help: "Build information; the value is always 1.",
        type: "gauge",
        collect: () => 1,
        labels: { version: options.version, deno: Deno.version.deno },
      }),
    ];
  }

  /** Records one answered request. */
  record(method: string, route: string, status: number, seconds: number): void {
    // The series maps are keyed by the joined label values; building that key here spares an array per request.
    const key = method + "\u0000" + route;
    this.requests.keyed(key + "\u0000" + status, () => [method, route, String(status)]).value++;
    this.duration.observeIn(this.duration.keyed(key, () => [method, route]), seconds);
  }

  /** The text exposition (format 0.0.4). */
  render(): string {
    const lines: string[] = [];
    for (const m of this.#all) m.render(lines);
    return lines.join("\n") + "\n";
  }
}
