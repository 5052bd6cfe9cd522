/**
 * `deno task soak`: load through many SIGTERM restarts, of the process and (with --container) of the image,
 * counting requests lost and log lines lost; then, with --rss SECONDS, RSS after warm-up against RSS after a
 * long run. Exit code 1 when anything was lost or a stop was not clean.
 *
 * Lost, for requests the server accepted: a request is accepted when the server wrote its access line.
 *  - requests lost: accepted (logged with 200) but its client never got the 200;
 *  - log lines lost: its client got a 200 but there is no access line for it.
 * Both must be 0. Requests refused while the server was not listening (before start, after the drain began)
 * were never accepted and are counted apart, as refused.
 *
 * Options: --cycles N (default 20), --workers N (16), --container, --rss SECONDS (0: skip), --quiet.
 */

import { freePort, rssBytes, ServerProcess, sleep } from "../testing.ts";

interface Options {
  cycles: number;
  workers: number;
  container: boolean;
  rssSeconds: number;
  quiet: boolean;
}

/** The counts of one soak run. */
export interface SoakResult {
  target: string;
  cycles: number;
  requests: number;
  refused: number;
  requestsLost: number;
  logLinesLost: number;
  uncleanExits: number[];
}

function parseOptions(args: string[]): Options {
  const value = (name: string, fallback: number) => {
    const i = args.indexOf(name);
    if (i < 0) return fallback;
    const n = Number(args[i + 1]);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name} takes a whole number, not ${args[i + 1]}`);
    return n;
  };
  for (const arg of args) {
    if (arg.startsWith("--") && !["--cycles", "--workers", "--container", "--rss", "--quiet"].includes(arg)) {
      throw new Error(`unknown option ${arg}`);
    }
  }
  return {
    cycles: value("--cycles", 20),
    workers: value("--workers", 16),
    container: args.includes("--container"),
    rssSeconds: value("--rss", 0),
    quiet: args.includes("--quiet"),
  };
}

/** Starts the target: the process with the flags of `deno task run`, or the image under podman. */
async function start(container: boolean): Promise<{ server: ServerProcess; base: string }> {
  if (!container) {
    const server = await ServerProcess.start();
    return { server, base: `http://127.0.0.1:${server.port}` };
  }
  const port = freePort();
  const server = await ServerProcess.start({ CONTAINERS_CONF: Deno.env.get("CONTAINERS_CONF") ?? "" }, [
    "podman",
    "run",
    "--rm",
    "--read-only",
    "--no-healthcheck",
    "-p",
    `127.0.0.1:${port}:8080`,
    Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest",
  ]);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) { // the port mapping can lag the "listening" line a little
    const ok = await fetch(`${base}/livez`).then(async (r) => (await r.body?.cancel(), r.ok), () => false);
    if (ok) break;
    await sleep(20);
  }
  return { server, base };
}

/** One cycle: load from `workers` keep-alive loops, SIGTERM partway, load on until nothing answers. */
async function cycle(options: Options, index: number) {
  const { server, base } = await start(options.container);
  const received = new Set<string>();
  let sent = 0;
  let refused = 0;
  let stop = false;
  using client = Deno.createHttpClient({});
  const workers = Array.from({ length: options.workers }, async (_, w) => {
    let failures = 0;
    while (!stop && failures < 50) {
      const id = `c${index}-w${w}-${sent++}`;
      try {
        const res = await fetch(`${base}/delay/0.01`, { client, headers: { "x-request-id": id } });
        await res.body?.cancel();
        if (res.status === 200) received.add(id);
        failures = 0;
      } catch {
        refused++;
        failures++;
        await sleep(5);
      }
    }
  });
  await sleep(500 + Math.random() * 1000);
  server.kill("SIGTERM");
  const code = await server.exit();
  stop = true;
  await Promise.all(workers);
  // The load's own requests only (their ids start with this prefix), not the readiness checks of start().
  const prefix = `c${index}-`;
  const accepted = new Set(
    server.records()
      .filter((r) => r.msg === "access" && r.status === 200 && String(r.request_id).startsWith(prefix))
      .map((r) => String(r.request_id)),
  );
  return {
    code,
    sent,
    refused,
    requestsLost: [...accepted].filter((id) => !received.has(id)).length,
    logLinesLost: [...received].filter((id) => !accepted.has(id)).length,
  };
}

/** Runs the restart soak; progress on stderr. */
export async function soak(options: Options): Promise<SoakResult> {
  const result: SoakResult = {
    target: options.container ? "container" : "process",
    cycles: 0,
    requests: 0,
    refused: 0,
    requestsLost: 0,
    logLinesLost: 0,
    uncleanExits: [],
  };
  for (let i = 0; i < options.cycles; i++) {
    const c = await cycle(options, i);
    result.cycles++;
    result.requests += c.sent;
    result.refused += c.refused;
    result.requestsLost += c.requestsLost;
    result.logLinesLost += c.logLinesLost;
    if (c.code !== 0) result.uncleanExits.push(c.code);
    if (!options.quiet) {
      console.error(
        `soak: ${result.target} cycle ${i + 1}/${options.cycles}: ${c.sent} requests, exit ${c.code}, ` +
          `lost ${c.requestsLost} requests and ${c.logLinesLost} log lines`,
      );
    }
  }
  return result;
}

/** RSS after `seconds / 10` of load (warm) and after `seconds` (long), in bytes. */
async function rssDrift(seconds: number): Promise<{ warmBytes: number; longBytes: number }> {
  const server = await ServerProcess.start();
  const rss = () => rssBytes(server.pid);
  const url = `http://127.0.0.1:${server.port}/`;
  const started = Date.now();
  let warmBytes = 0;
  let stop = false;
  using client = Deno.createHttpClient({});
  const workers = Array.from({ length: 8 }, async () => {
    while (!stop) await fetch(url, { client }).then((r) => r.body?.cancel());
  });
  await sleep((seconds * 1000) / 10);
  warmBytes = rss();
  console.error(`soak: RSS after ${seconds / 10} s of load: ${(warmBytes / 1048576).toFixed(1)} MiB`);
  await sleep(seconds * 1000 - (Date.now() - started));
  const longBytes = rss();
  stop = true;
  await Promise.all(workers);
  server.kill("SIGTERM");
  await server.exit();
  return { warmBytes, longBytes };
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    console.error(`soak: ${error instanceof Error ? error.message : error}`);
    Deno.exit(2);
  }
  const results = [await soak(options)];
  if (options.container) results.push(await soak({ ...options, container: false }));
  let failed = results.some((r) => r.requestsLost || r.logLinesLost || r.uncleanExits.length);
  console.log(
    "| target | cycles | requests | refused (never accepted) | requests lost | log lines lost | unclean exits |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
  for (const r of results) {
    console.log(
      `| ${r.target} | ${r.cycles} | ${r.requests} | ${r.refused} | ${r.requestsLost} | ${r.logLinesLost} | ` +
        `${r.uncleanExits.length ? r.uncleanExits.join(", ") : "none"} |`,
    );
  }
  if (options.rssSeconds > 0) {
    const { warmBytes, longBytes } = await rssDrift(options.rssSeconds);
    const growth = (longBytes - warmBytes) / 1048576;
    const flat = longBytes <= warmBytes * 1.2 + 5 * 1048576;
    console.log(
      `\nRSS: ${(warmBytes / 1048576).toFixed(1)} MiB after warm-up, ${(longBytes / 1048576).toFixed(1)} MiB after ` +
        `${options.rssSeconds} s of load (${growth >= 0 ? "+" : ""}${growth.toFixed(1)} MiB): ${
          flat ? "flat" : "GROWING"
        }`,
    );
    failed ||= !flat;
  }
  Deno.exit(failed ? 1 : 0);
}
