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

/** A keep-alive load that ran until stopped (the rollout's): requests sent, answers and errors by kind. */
export interface LoadCounts {
  tool: "wrk" | "autocannon";
  connections: number;
  /** How long it ran, in seconds. */
  seconds: number;
  /** Requests written (wrk: counted by a Lua request() hook). */
  sent: number;
  /** Answers received, whatever their status. */
  responses: number;
  /** Answers with a status of 400 or more (wrk's "Non-2xx or 3xx"; none of the subjects redirects). */
  non2xx: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
}

/** wrk's Lua hooks: count the requests each thread writes, and print the total after the summary. */
const WRK_SENT_SCRIPT = `local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) sent = 0; req = wrk.format() end
function request() sent = sent + 1; return req end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("sent") end
  io.write(string.format("sent %d\\n", total))
end
`;

/** Parses the counts of a wrk run with the request-counting script (its `sent N` line) from its output. */
export function parseWrkCounts(output: string): Omit<LoadCounts, "tool" | "connections"> {
  const summary = /^\s+(\d+) requests in ([\d.]+)(us|ms|s|m)\b/m.exec(output);
  const sent = /^sent (\d+)$/m.exec(output);
  if (!summary || !sent) throw new Error(`wrk output without a request count or a sent line:\n${output}`);
  const non2xx = /^\s+Non-2xx or 3xx responses:\s+(\d+)/m.exec(output);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    seconds: (Number(summary[2]) * UNITS_MS[summary[3]]) / 1000,
    sent: Number(sent[1]),
    responses: Number(summary[1]),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    connect: socket ? Number(socket[1]) : 0,
    read: socket ? Number(socket[2]) : 0,
    write: socket ? Number(socket[3]) : 0,
    timeout: socket ? Number(socket[4]) : 0,
  };
}

/** Parses the counts of an autocannon --json run (socket errors all count as read errors: it does not split them). */
export function parseAutocannonCounts(output: string): Omit<LoadCounts, "tool" | "connections"> {
  const start = output.indexOf("{");
  if (start < 0) throw new Error(`autocannon output without JSON:\n${output}`);
  const r = JSON.parse(output.slice(start));
  if (typeof r.requests?.total !== "number" || typeof r.duration !== "number") {
    throw new Error("autocannon JSON without requests.total or duration");
  }
  return {
    seconds: r.duration,
    sent: r.requests.sent ?? r.requests.total,
    responses: r.requests.total,
    non2xx: r.non2xx ?? 0,
    connect: 0,
    read: Math.max(0, (r.errors ?? 0) - (r.timeouts ?? 0)),
    write: 0,
    timeout: r.timeouts ?? 0,
  };
}

/**
 * autocannon run from its API under node, so SIGINT stops it with its results (its command line exits on SIGINT
 * without them). Arguments: the module's path, url, connections, timeout in seconds.
 */
const AUTOCANNON_SCRIPT = `const [path, url, connections, timeout] = process.argv.slice(1);
const instance = require(path)({ url, connections: Number(connections), timeout: Number(timeout), duration: 86400 },
  (error, result) => {
    if (error) throw error;
    process.stdout.write(JSON.stringify(result));
  });
process.once("SIGINT", () => instance.stop());
`;

/** The path of autocannon's module, fetched by npx into its cache when missing. */
function autocannonModule(): string {
  const find = 'const fs = require("fs"); const bin = process.env.PATH.split(":").map((d) => d + "/autocannon")' +
    ".find((p) => fs.existsSync(p)); process.stdout.write(fs.realpathSync(bin));";
  const out = new Deno.Command("npx", {
    args: ["--yes", "-p", "autocannon@8", "node", "-e", find],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !path) throw new Error(`npx autocannon failed: ${new TextDecoder().decode(out.stderr)}`);
  return path;
}

/**
 * Starts keep-alive load against `url` that runs until stop(): wrk when installed (with a Lua hook counting the
 * requests sent), else autocannon from npm (through its API). Both end on SIGINT and print their summary.
 */
export function startLoad(
  url: string,
  connections: number,
  timeoutSeconds = 5,
): { stop(): Promise<LoadCounts> } {
  const wrk = haveWrk();
  const script = wrk ? Deno.makeTempFileSync({ suffix: ".lua" }) : "";
  if (wrk) Deno.writeTextFileSync(script, WRK_SENT_SCRIPT);
  const child = (wrk
    ? new Deno.Command("wrk", {
      args: ["-t2", `-c${connections}`, "-d1h", `--timeout`, `${timeoutSeconds}s`, "-s", script, url],
      stdout: "piped",
      stderr: "piped",
    })
    : new Deno.Command("node", {
      args: ["-e", AUTOCANNON_SCRIPT, autocannonModule(), url, String(connections), String(timeoutSeconds)],
      stdout: "piped",
      stderr: "piped",
    })).spawn();
  const output = child.output();
  return {
    async stop() {
      child.kill("SIGINT");
      const out = await output;
      if (script) Deno.removeSync(script);
      const text = new TextDecoder().decode(out.stdout);
      const counts = wrk ? parseWrkCounts(text) : parseAutocannonCounts(text);
      return { tool: wrk ? "wrk" : "autocannon", connections, ...counts };
    },
  };
}
