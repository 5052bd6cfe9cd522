/** Keep-alive load: wrk when it is installed, else autocannon from npm; and the parsers of their output. */

/** What one load run measured. */
export interface LoadResult {
  requestsPerSecond: number;
  /** Requests answered over the whole run (the denominator of the server's CPU time per request). */
  requests: number;
  p99Ms: number;
  /** Non-2xx answers and socket errors: a load run with errors is reported, not hidden. */
  errors: number;
  tool: "wrk" | "autocannon";
}

const UNITS_MS: { [unit: string]: number } = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** Parses the output of `wrk --latency`: Requests/sec, the 99% latency line and the error lines. */
export function parseWrk(output: string): LoadResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m)\b/m.exec(output);
  const requests = /^\s+(\d+) requests in /m.exec(output);
  if (!rps || !p99 || !requests) {
    throw new Error(`wrk output without Requests/sec, a 99% line or a request count:\n${output}`);
  }
  let errors = 0;
  const non2xx = /^\s+Non-2xx or 3xx responses:\s+(\d+)/m.exec(output);
  if (non2xx) errors += Number(non2xx[1]);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  if (socket) errors += socket.slice(1).reduce((sum, n) => sum + Number(n), 0);
  return {
    requestsPerSecond: Number(rps[1]),
    requests: Number(requests[1]),
    p99Ms: Number(p99[1]) * UNITS_MS[p99[2]],
    errors,
    tool: "wrk",
  };
}

/** Parses the JSON output of `autocannon --json`. */
export function parseAutocannon(output: string): LoadResult {
  const start = output.indexOf("{");
  if (start < 0) throw new Error(`autocannon output without JSON:\n${output}`);
  const r = JSON.parse(output.slice(start));
  if (
    typeof r.requests?.average !== "number" || typeof r.requests?.total !== "number" ||
    typeof r.latency?.p99 !== "number"
  ) {
    throw new Error(`autocannon JSON without requests.average, requests.total or latency.p99`);
  }
  return {
    requestsPerSecond: r.requests.average,
    requests: r.requests.total,
    p99Ms: r.latency.p99,
    errors: (r.errors ?? 0) + (r.non2xx ?? 0) + (r.timeouts ?? 0),
    tool: "autocannon",
  };
}

/** True when wrk is on PATH (BENCH_LOAD_TOOL=autocannon forces the npm fallback). */
export function haveWrk(): boolean {
  if (Deno.env.get("BENCH_LOAD_TOOL") === "autocannon") return false;
  try {
    new Deno.Command("wrk", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}

/** Runs `seconds` of keep-alive load with `connections` connections against `url`. */
export async function runLoad(url: string, seconds: number, connections = 50): Promise<LoadResult> {
  const wrk = haveWrk();
  const command = wrk
    ? new Deno.Command("wrk", { args: ["-t2", `-c${connections}`, `-d${seconds}s`, "--latency", url] })
    : new Deno.Command("npx", {
      args: ["--yes", "autocannon@8", "--json", "-c", String(connections), "-d", String(seconds), url],
    });
  const out = await command.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`${wrk ? "wrk" : "autocannon"} failed: ${new TextDecoder().decode(out.stderr)}`);
  return wrk ? parseWrk(text) : parseAutocannon(text);
}
