import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { parseAutocannon, parseWrk } from "./load.ts";
import {
  cell,
  chart,
  checkTargets,
  containerMarkdown,
  FIGURES,
  IMAGE_OVERHEAD,
  markdown,
  routeFigures,
  routeMarkdown,
  ROUTES,
  type Row,
  svg,
} from "./report.ts";
import { soak } from "./soak.ts";
import { ratio, summarize } from "./stats.ts";
import { FLOOR_IMAGES, imageBinaryBytes, subjects, targetTag } from "./subjects.ts";
import { freePort, getFresh, sleep } from "../testing.ts";

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
    for (const key of ["rps_page", "p99_page", "cpu_request_page", "log_lines_page"]) {
      equal(samples[key]?.length, 1, `the / route is loaded too: ${key}`);
    }
    match(stdout, /^\| \/ \| shipshape \| [\d,]+ \| - \| - \|/m);
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

const MIB = 1048576;
const CONTAINER_ROWS: Row[] = [
  {
    name: "shipshape container",
    figures: {
      image: summarize([95 * MIB]),
      binary: summarize([91 * MIB]),
      image_overhead: summarize([4 * MIB]),
      ready: summarize([250]),
      stop: summarize([330, 340]),
    },
  },
  {
    name: "go scratch container",
    figures: {
      image: summarize([4.3 * MIB]),
      binary: summarize([4.3 * MIB]),
      image_overhead: summarize([0]),
      ready: summarize([200]),
      stop: summarize([320]),
    },
  },
  { name: "shipshape compiled container", skip: "shipshape compiled container: no denort", figures: {} },
];

Deno.test("containerMarkdown() adds the image's overhead over its binary and ratios to the floor row", () => {
  const text = containerMarkdown(CONTAINER_ROWS, "go scratch container");
  match(
    text,
    /^\| subject \| image \(MiB\) \| image gz \(MiB\) \| binary \(MiB\) \| image over binary \(MiB\) \| ready/m,
  );
  match(text, /^\| shipshape container \| 95\.0 \| - \| 91\.0 \| 4\.00 \| 250 \| 335 \(330-340\) \|/m);
  match(text, /^Ratios to go scratch container/m);
  match(text, /^\| shipshape container \| 1\.25 \| 1\.05 \| - \| - \| - \| - \|$/m);
  match(text, /^Skipped: shipshape compiled container: no denort$/m);
});

const ROUTE_ROWS: Row[] = [
  {
    name: "shipshape",
    figures: { rps: summarize([50_000]), cpu_request: summarize([15]), rps_page: summarize([30_000]) },
  },
  {
    name: "deno bare",
    figures: { rps: summarize([70_000]), cpu_request: summarize([10]), rps_page: summarize([60_000]) },
  },
  {
    name: "deno bare + contract",
    figures: { rps: summarize([52_000]), cpu_request: summarize([14]), rps_page: summarize([31_000]) },
  },
];

Deno.test("routeMarkdown() gives each route's req/s and CPU per request against its floor and the bare server", () => {
  const text = routeMarkdown(ROUTE_ROWS);
  match(text, /^\| \/readyz \| shipshape \| 50,000 \| 0\.96 \| 0\.71 \| 15\.0 \| 1\.07 \| 1\.50 \| - \|$/m);
  match(text, /^\| \/ \| shipshape \| 30,000 \| 0\.97 \| 0\.50 \| - \| - \| - \| - \|$/m);
  match(text, /^\| \/ \| deno bare \+ contract \| 31,000 \| 1\.00 \| 0\.52 \|/m);
  equal(text.split("\n").filter((l) => l.startsWith("| /")).length, 6);
});

Deno.test("checkTargets() says met, NOT met or not measured for each target", () => {
  const checks = checkTargets([...CONTAINER_ROWS, ...ROUTE_ROWS], {
    floor: "go scratch container",
    containers: ["shipshape container", "shipshape compiled container"],
    servers: ["shipshape"],
  });
  const texts = checks.map((c) => `${c.met} ${c.text}`);
  match(texts[0], /^true shipshape container: ready 1\.25x the go scratch container's \(250 ms against 200 ms\)/);
  match(texts[1], /^true shipshape container: idle stop 1\.05x/);
  match(texts[2], /^true shipshape container: image 4\.19 MB \(4\.00 MiB\) over its binary .*: met$/);
  match(texts[3], /^true \/readyz: shipshape by req\/s: 0\.96 of its same-response floor/);
  match(texts[4], /^false \/readyz: shipshape by CPU per request: 0\.93 .*: NOT met$/);
  match(texts[5], /^true \/: shipshape by req\/s: 0\.97/);
  match(texts[6], /^undefined \/: shipshape by CPU per request: - .*: not measured$/);
  equal(checks.length, 7, "the skipped compiled container is not checked");
  const big = checkTargets([{ name: "c", figures: { image_overhead: summarize([5.1e6]) } }], {
    floor: "f",
    containers: ["c"],
    servers: [],
  });
  equal(big[2].met, false);
});

Deno.test("chart() draws the container and per-route figures it is given", () => {
  const text = chart([...CONTAINER_ROWS, ...ROUTE_ROWS], "t", [...FIGURES, IMAGE_OVERHEAD, ...routeFigures(ROUTES[1])]);
  equal(XMLValidator.validate(text), true);
  ok(text.includes("image over binary (MiB), lower is better"));
  ok(text.includes("req/s on / (req/s), higher is better"));
});

Deno.test("targetTag() names the other target's image beside the given one", () => {
  equal(targetTag("localhost/shipshape:floors", "runtime"), "localhost/shipshape:floors-runtime");
  equal(targetTag("localhost/shipshape", "compiled"), "localhost/shipshape:latest-compiled");
  equal(targetTag("localhost:5000/shipshape", "compiled"), "localhost:5000/shipshape:latest-compiled");
});

/** One raw HTTP/1.1 exchange; the response head and body as sent, with the Date line taken out. */
async function raw(port: number, path: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: same-id-1\r\nUser-Agent: t\r\nConnection: close\r\n\r\n`,
    ),
  );
  let text = "";
  for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) text += chunk;
  return text.replace(/^date: .*\r\n/im, "");
}

async function ready(port: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await getFresh(`http://127.0.0.1:${port}/readyz`).catch(() => ({ status: 0 }))).status === 200) return;
    await sleep(20);
  }
  throw new Error(`no 200 on port ${port} within 10 s`);
}

Deno.test("the same-response floor sends shipshape's bytes and headers on / and /readyz; the bare server its page", async () => {
  const all = subjects({ image: "localhost/none", compiled: "/nonexistent" });
  const names = ["shipshape", "deno bare + contract", "deno bare"];
  const started = names.map((name) => all.find((s) => s.name === name)!.start(freePort()));
  try {
    for (const r of started) await ready(r.port);
    const [ship, floor, bare] = started;
    for (const path of ["/", "/readyz"]) {
      const expected = await raw(ship.port, path);
      match(expected, /^HTTP\/1\.1 200 OK\r\nx-request-id: same-id-1\r\nx-content-type-options: nosniff\r\n/);
      equal(await raw(floor.port, path), expected, path);
    }
    const page = await raw(ship.port, "/");
    const barePage = await raw(bare.port, "/");
    equal(barePage.split("\r\n\r\n")[1], page.split("\r\n\r\n")[1], "the same page body");
    match(barePage, /^HTTP\/1\.1 200 OK\r\ncontent-type: text\/html; charset=utf-8\r\ncontent-length: \d+\r\n/);
  } finally {
    for (const r of started) {
      await r.terminate();
      equal(await r.exited, 0);
    }
  }
  for (const r of started) ok(r.lines() >= 2, "one access line per request");
});

Deno.test("the Go floor builds FROM scratch as one static file run by a numeric user, and drains on SIGTERM", async () => {
  const root = new URL("../", import.meta.url).pathname;
  const tag = "localhost/shipshape-bench-go:test";
  const build = await new Deno.Command("bash", { args: ["tools/go_image.sh", tag], cwd: root, stdin: "null" }).output();
  const stderr = new TextDecoder().decode(build.stderr);
  equal(build.code, 0, stderr);
  try {
    const said = /\/server (\d+) bytes/.exec(new TextDecoder().decode(build.stdout));
    ok(said, "go_image.sh names the binary's size");
    equal(await imageBinaryBytes(tag), Number(said[1]));
    const inspect = await new Deno.Command("podman", {
      args: [
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}} {{len .RootFS.Layers}}",
        tag,
      ],
    }).output();
    equal(new TextDecoder().decode(inspect.stdout).trim(), '65532:65532 ["/server"] 1');
    const size = Number(
      new TextDecoder().decode(
        (await new Deno.Command("podman", { args: ["image", "inspect", "--format", "{{.Size}}", tag] }).output())
          .stdout,
      ),
    );
    ok(size - Number(said[1]) < 64 * 1024, `image ${size} bytes for a ${said[1]}-byte binary`);
  } finally {
    await new Deno.Command("podman", { args: ["rmi", "--force", tag], stdout: "null", stderr: "null" }).output();
  }
  equal(FLOOR_IMAGES.go, "localhost/shipshape-bench-go:latest");

  // The same source as a plain process: its routes, one access line per request, and the drain.
  const dir = Deno.makeTempDirSync({ prefix: "shipshape-go-" });
  try {
    const go = await new Deno.Command("go", {
      args: ["build", "-o", `${dir}/server`, "."],
      cwd: `${root}bench/baselines/go_server`,
      env: { CGO_ENABLED: "0" },
    }).output();
    equal(go.code, 0, new TextDecoder().decode(go.stderr));
    const port = freePort();
    const child = new Deno.Command(`${dir}/server`, {
      env: { PORT: String(port), HOST: "127.0.0.1" },
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const out = new Response(child.stdout).text();
    await ready(port);
    const page = await getFresh(`http://127.0.0.1:${port}/`);
    match(page.body, /This is a demo page!/);
    const slow = getFresh(`http://127.0.0.1:${port}/delay/0.5`);
    await sleep(100);
    child.kill("SIGTERM");
    deepStrictEqual(await slow, { status: 200, body: "waited\n" });
    equal((await child.status).code, 0);
    const lines = (await out).trimEnd().split("\n");
    equal(lines.length, 3, lines.join("\n"));
    match(lines[2], /^GET \/delay\/0\.5 200 7 /);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
