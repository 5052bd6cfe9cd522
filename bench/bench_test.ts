import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { parseAutocannon, parseWrk } from "./load.ts";
import { cell, FIGURES, markdown, type Row, svg } from "./report.ts";
import { soak } from "./soak.ts";
import { ratio, summarize } from "./stats.ts";

const DATA = new URL("./testdata/", import.meta.url);

Deno.test("summarize() gives the median, min, max and count", () => {
  deepStrictEqual(summarize([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
  deepStrictEqual(summarize([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4, n: 4 });
  deepStrictEqual(summarize([7]), { median: 7, min: 7, max: 7, n: 1 });
  equal(summarize([]), undefined);
  throws(() => summarize([1, NaN]), /NaN/);
});

Deno.test("ratio() divides, and is undefined without both values or for a zero reference", () => {
  equal(ratio(3, 2), 1.5);
  equal(ratio(undefined, 2), undefined);
  equal(ratio(3, undefined), undefined);
  equal(ratio(3, 0), undefined);
});

Deno.test("parseWrk() reads requests/s, the p99 latency in ms and the errors from recorded output", () => {
  const result = parseWrk(Deno.readTextFileSync(new URL("wrk.txt", DATA)));
  deepStrictEqual(result, { requestsPerSecond: 82893.65, requests: 83031, p99Ms: 2.4, errors: 0, tool: "wrk" });
  const withErrors = Deno.readTextFileSync(new URL("wrk.txt", DATA))
    .replace(
      "Requests/sec",
      "  Socket errors: connect 0, read 3, write 1, timeout 2\n  Non-2xx or 3xx responses: 5\nRequests/sec",
    )
    .replace("99%    2.40ms", "99%  812.00us");
  deepStrictEqual(parseWrk(withErrors), {
    requestsPerSecond: 82893.65,
    requests: 83031,
    p99Ms: 0.812,
    errors: 11,
    tool: "wrk",
  });
  throws(() => parseWrk("Running 1s test"), /without Requests\/sec/);
  throws(() => parseWrk(withErrors.replace(/^.*requests in.*$/m, "")), /request count/);
});

Deno.test("parseAutocannon() reads the JSON report from recorded output", () => {
  const result = parseAutocannon(Deno.readTextFileSync(new URL("autocannon.json", DATA)));
  equal(result.tool, "autocannon");
  equal(result.requestsPerSecond, 57776);
  equal(result.requests, 57779);
  equal(result.p99Ms, 0);
  equal(result.errors, 0);
  throws(() => parseAutocannon("no json here"), /without JSON/);
});

const ROWS: Row[] = [
  {
    name: "shipshape",
    figures: {
      ready: summarize([30, 20, 25]),
      rps: summarize([50_000, 52_000]),
      rss_idle: summarize([42 * 1048576]),
      drain_ok: summarize([10]),
    },
  },
  {
    name: "python <http.server>",
    figures: { ready: summarize([100]), rps: summarize([500]), rss_idle: summarize([21 * 1048576]) },
  },
  { name: "shipshape compiled", skip: "shipshape compiled: no denort here", figures: {} },
];

Deno.test("cell() shows the median with min-max, scaled", () => {
  equal(cell(summarize([30, 20, 25])), "25.0 (20.0-30.0)");
  equal(cell(summarize([42 * 1048576]), 1048576), "42.0");
  equal(cell(summarize([51_000, 50_000, 52_000])), "51,000 (50,000-52,000)");
  equal(cell(undefined), "-");
});

Deno.test("markdown() writes a column per figure, a row per subject, ratios to shipshape and the skips", () => {
  const text = markdown(ROWS);
  const lines = text.split("\n");
  match(lines[0], /^\| subject \| image \(MiB\) \|.*\| ready \(ms\) \|.*\| req\/s \(req\/s\) \|/);
  equal(lines[0].split("|").length - 2, FIGURES.length + 1);
  match(text, /^\| shipshape \| - \| - \| - \| 25\.0 \(20\.0-30\.0\) \|/m);
  match(text, /^\| python <http\.server> \| .*\| 100 \|/m);
  match(text, /^Ratios to shipshape/m);
  match(text, /^\| python <http\.server> \| 4\.00 \| - \| - \| 0\.50 \| 0\.01 \| - \| - \|$/m);
  match(text, /^Skipped: shipshape compiled: no denort here$/m);
  ok(!/^\| shipshape compiled \|/m.test(text));
});

Deno.test("svg() writes a well-formed SVG with one panel per measured figure and escaped names", () => {
  const text = svg(ROWS, "bench <test>");
  equal(XMLValidator.validate(text), true);
  const doc = new XMLParser({ ignoreAttributes: false }).parse(text);
  const panels = doc.svg.g;
  equal(panels.length, 4); // ready, drain_ok, rss_idle, rps: the figures some subject has
  ok(text.includes("python &#60;http.server&#62;"));
  ok(text.includes("bench &#60;test&#62;"));
  ok(!text.includes("shipshape compiled"), "skipped subjects are not drawn");
});

Deno.test("bench.ts runs end to end on the shipshape process and writes its results", async () => {
  const out = Deno.makeTempDirSync({ prefix: "shipshape-bench-" });
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "bench/bench.ts",
        "--only",
        "shipshape",
        "--runs",
        "1",
        "--seconds",
        "1",
        "--out",
        out,
      ],
      cwd: new URL("../", import.meta.url).pathname,
      stdin: "null",
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    const stderr = new TextDecoder().decode(run.stderr);
    equal(run.code, 0, stderr);
    match(stdout, /^\| shipshape \| - \| - \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d,.]+ \| 10\.0 \|/m);
    match(stderr, /bench: start\/idle\/stop: shipshape, run 1 of 1/);
    const result = JSON.parse(Deno.readTextFileSync(`${out}/latest.json`));
    equal(result.subjects.length, 1);
    const samples = result.subjects[0].samples;
    const keys = ["ready", "stop", "rss_idle", "drain_stop", "drain_ok", "rps", "p99", "rss_load", "log_lines"];
    for (const key of [...keys, "cpu_request"]) equal(samples[key]?.length, 1, key);
    equal(samples.drain_ok[0], 10);
    ok(samples.rps[0] > 0);
    // A second of load at thousands of requests/s uses tens of CPU ticks at least: 0 would mean a broken reading.
    ok(samples.cpu_request[0] > 0.5 && samples.cpu_request[0] < 10_000, `CPU per request ${samples.cpu_request[0]} us`);
    ok(samples.log_lines[0] >= samples.rps[0] * 0.5, "the access lines reached the pipe");
    deepStrictEqual(result.errors, []);
    equal(result.machine.cores, navigator.hardwareConcurrency);
    equal(XMLValidator.validate(Deno.readTextFileSync(`${out}/latest.svg`)), true);
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
});

Deno.test("soak() restarts the process under load and counts no lost request or log line", async () => {
  const result = await soak({ cycles: 2, workers: 4, container: false, rssSeconds: 0, quiet: true });
  equal(result.cycles, 2);
  ok(result.requests > 50, `${result.requests} requests`);
  equal(result.requestsLost, 0);
  equal(result.logLinesLost, 0);
  deepStrictEqual(result.uncleanExits, []);
});
