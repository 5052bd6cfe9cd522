import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import { haproxyConfig, parseStat, serverArguments } from "./haproxy.ts";
import { parseWrkCounts } from "./load.ts";
import { deploymentSettings, rolloutSettings } from "./manifest.ts";
import { errorKind, parseResponse } from "./new_connection_client.ts";
import { ACCESS_PATTERNS } from "./replicas.ts";
import { figureMarkdown } from "./report.ts";
import { parseOptions } from "./rollout.ts";
import { failed, type Outcome, ROLLOUT_FIGURES, row, tally } from "./tally.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MANIFEST = Deno.readTextFileSync(`${ROOT}manifests/deployment.yaml`);

Deno.test("rolloutSettings() reads the strategy, readinessProbe, grace period and SHUTDOWN_* from the manifest", () => {
  const s = deploymentSettings();
  equal(s.replicas, 2);
  equal(s.maxSurge, 1);
  equal(s.maxUnavailable, 0);
  deepStrictEqual(s.probe, {
    path: "/readyz",
    periodMs: 2000,
    failureThreshold: 1,
    successThreshold: 1,
    timeoutMs: 1000,
  });
  equal(s.graceSeconds, 30);
  equal(s.shutdownDelayMs, 5000);
  equal(s.shutdownTimeoutMs, 20000);
  equal(s.env.SHUTDOWN_DELAY, "5000ms");
  equal(s.env.LOG_FORMAT, "json");
});

Deno.test("rolloutSettings() scales every time by one factor, the grace period rounded up to whole seconds", () => {
  const s = rolloutSettings(MANIFEST, 0.25);
  equal(s.probe.periodMs, 500);
  equal(s.probe.timeoutMs, 250);
  equal(s.probe.failureThreshold, 1);
  equal(s.shutdownDelayMs, 1250);
  equal(s.env.SHUTDOWN_TIMEOUT, "5000ms");
  equal(s.graceSeconds, 8);
  throws(() => rolloutSettings(MANIFEST, 0), /scale/);
});

Deno.test("rolloutSettings() follows the file: other probe times, percentages, Kubernetes' defaults", () => {
  const edited = MANIFEST
    .replace("periodSeconds: 2", "periodSeconds: 7")
    .replace("failureThreshold: 1", "failureThreshold: 4")
    .replace("maxUnavailable: 0", "maxUnavailable: 50%")
    .replace("maxSurge: 1", "maxSurge: 25%")
    .replace(/\n {12}timeoutSeconds: 1/, "")
    .replace('value: "5"', 'value: "750ms"');
  const s = rolloutSettings(edited, 1, 2);
  equal(s.probe.periodMs, 7000);
  equal(s.probe.failureThreshold, 4);
  equal(s.probe.timeoutMs, 1000); // the default timeoutSeconds
  equal(s.maxUnavailable, 1); // 50% of 2, rounded down
  equal(s.maxSurge, 1); // 25% of 2, rounded up
  equal(s.shutdownDelayMs, 750);
  throws(() => rolloutSettings(MANIFEST.replace("kind: Deployment", "kind: Pod")), /not a Deployment/);
  throws(() => rolloutSettings(MANIFEST.replace("readinessProbe:", "startupProbe:")), /readinessProbe/);
});

Deno.test("haproxyConfig() balances round robin with the readiness check, no retries and no redispatch", () => {
  const probe = rolloutSettings(MANIFEST, 0.5).probe;
  const l4 = haproxyConfig("l4", 8000, "/tmp/x.sock", probe);
  const l7 = haproxyConfig("l7", 8000, "/tmp/x.sock", probe);
  match(l4, /^ {2}mode tcp$/m);
  match(l7, /^ {2}mode http$/m);
  match(l7, /^ {2}option http-keep-alive$/m);
  for (const config of [l4, l7]) {
    match(config, /^ {2}balance roundrobin$/m);
    match(config, /^ {2}retries 0$/m);
    match(config, /^ {2}no option redispatch$/m);
    match(config, /^ {2}http-check send meth GET uri \/readyz /m);
    match(config, /^ {2}timeout check 500ms$/m);
    match(config, /^ {2}bind 127\.0\.0\.1:8000$/m);
    match(config, /stats socket \/tmp\/x\.sock .*level admin/);
  }
  equal(serverArguments(4000, probe), "127.0.0.1:4000 weight 0 check inter 1000ms fall 1 rise 1");
});

Deno.test("haproxyConfig() is a configuration HAProxy accepts (haproxy -c), in both modes", async () => {
  const install = await new Deno.Command("bash", { args: [`${ROOT}tools/haproxy.sh`] }).output();
  ok(install.success, `tools/haproxy.sh failed: ${new TextDecoder().decode(install.stderr)}`);
  const dir = Deno.makeTempDirSync();
  try {
    for (const mode of ["l4", "l7"] as const) {
      Deno.writeTextFileSync(`${dir}/h.cfg`, haproxyConfig(mode, 8000, `${dir}/s.sock`, deploymentSettings().probe));
      const out = await new Deno.Command("haproxy", { args: ["-c", "-f", `${dir}/h.cfg`] }).output();
      ok(out.success, `${mode}: ${new TextDecoder().decode(out.stdout)}${new TextDecoder().decode(out.stderr)}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseStat() reads each server's status, check result and weight from `show stat`", () => {
  const csv = [
    "# pxname,svname,qcur,status,weight,check_status",
    "service,FRONTEND,,OPEN,,",
    "pods,r1,0,UP,1,L7OK",
    "pods,r2,0,DOWN,1,L7STS",
    "pods,BACKEND,0,UP,1,",
  ].join("\n");
  deepStrictEqual(
    [...parseStat(csv)],
    [["r1", { status: "UP", checkStatus: "L7OK", weight: 1 }], ["r2", {
      status: "DOWN",
      checkStatus: "L7STS",
      weight: 1,
    }]],
  );
});

Deno.test("parseWrkCounts() reads requests sent, answered and the errors by kind from a stopped wrk run", () => {
  const text = Deno.readTextFileSync(new URL("./testdata/wrk_rollout.txt", import.meta.url));
  deepStrictEqual(parseWrkCounts(text), {
    seconds: 3.12,
    sent: 47005,
    responses: 38475,
    non2xx: 0,
    connect: 0,
    read: 8,
    write: 8526,
    timeout: 0,
  });
  const with503 = text.replace("Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec");
  equal(parseWrkCounts(with503).non2xx, 12);
  throws(() => parseWrkCounts(text.replace(/^sent \d+$/m, "")), /sent line/);
});

Deno.test("parseResponse() gives the status of a whole answer, and 'closed' for a cut one", () => {
  const encode = (s: string) => new TextEncoder().encode(s);
  equal(parseResponse(encode("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")), 200);
  equal(parseResponse(encode("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")), 503);
  equal(parseResponse(encode("HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\nok\n")), "closed");
  equal(parseResponse(encode("HTTP/1.1 200 OK\r\ncontent-le")), "closed");
  equal(parseResponse(encode("")), "closed");
  equal(parseResponse(encode("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nok\n\r\n")), "closed");
  equal(parseResponse(encode("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n")), 200);
  equal(errorKind(new Deno.errors.ConnectionRefused("x")), "refused");
  equal(errorKind(new Deno.errors.ConnectionReset("x")), "reset");
  equal(errorKind(new Error("x")), "other");
});

Deno.test("ACCESS_PATTERNS match each subject's access line of a 200 to GET / and nothing else (awk)", async () => {
  const lines: { [key in keyof typeof ACCESS_PATTERNS]: [string, string[]] } = {
    shipshape: [
      '{"time":"t","level":"info","msg":"access","method":"GET","path":"/","status":200,"bytes":212}',
      [
        '{"time":"t","level":"info","msg":"access","method":"GET","path":"/readyz","status":200,"bytes":3}',
        '{"time":"t","level":"info","msg":"access","method":"GET","path":"/","status":503,"bytes":12}',
        '{"time":"t","level":"info","msg":"listening","address":"127.0.0.1","port":1}',
      ],
    ],
    plain: ["GET / 200", ["GET /readyz 200"]],
    node: ['127.0.0.1 - - [Sun, 29 Nov 2026 04:25:14 GMT] "GET /" 200', [
      '127.0.0.1 - - [Sun, 29 Nov 2026 04:25:14 GMT] "GET /readyz" 200',
    ]],
    python: ['127.0.0.1 - - [29/Nov/2026 04:25:14] "GET / HTTP/1.1" 200 -', [
      '127.0.0.1 - - [29/Nov/2026 04:25:14] "GET /readyz HTTP/1.1" 200 -',
      '127.0.0.1 - - [29/Nov/2026 04:25:14] "GET / HTTP/1.1" 503 -',
    ]],
  };
  for (const [format, [yes, no]] of Object.entries(lines)) {
    const pattern = ACCESS_PATTERNS[format as keyof typeof ACCESS_PATTERNS];
    const awk = new Deno.Command("awk", { args: ["-v", `re=${pattern}`, "$0 ~ re"], stdin: "piped", stdout: "piped" })
      .spawn();
    const writer = awk.stdin.getWriter();
    await writer.write(new TextEncoder().encode([yes, ...no].join("\n") + "\n"));
    await writer.close();
    const out = await awk.output();
    equal(new TextDecoder().decode(out.stdout), yes + "\n", format);
  }
});

function outcome(overrides: Partial<Outcome> = {}): Outcome {
  return {
    subject: "shipshape",
    mode: "l4",
    keepAlive: {
      tool: "wrk",
      connections: 16,
      seconds: 10,
      sent: 1010,
      responses: 1000,
      non2xx: 0,
      connect: 0,
      read: 0,
      write: 0,
      timeout: 0,
    },
    newConnection: {
      rate: 100,
      seconds: 10,
      sent: 100,
      statuses: { "200": 100 },
      errors: { refused: 0, reset: 0, closed: 0, timeout: 0, other: 0 },
      skipped: 0,
    },
    linesLogged: 1105,
    cyclesMs: [5000, 6000],
    exits: [0, 0, 0, 0],
    finalExits: [0, 0],
    ...overrides,
  };
}

Deno.test("tally() counts over both clients; a clean rollout has no failure", () => {
  const t = tally(outcome());
  equal(t.sent, 1110);
  equal(t.ok, 1100);
  equal(t.failed, 0);
  equal(t.linesLost, 0);
  equal(t.linesUnanswered, 5);
  equal(t.inFlightAtStop, 10);
  equal(failed(outcome()), false);
});

Deno.test("tally() counts non-2xx and connection errors as failed, and a 2xx without its access line as lost", () => {
  const o = outcome({
    keepAlive: { ...outcome().keepAlive!, non2xx: 3, read: 2, timeout: 1 },
    newConnection: {
      ...outcome().newConnection!,
      statuses: { "200": 90, "503": 4 },
      errors: { refused: 1, reset: 2, closed: 3, timeout: 0, other: 0 },
    },
    linesLogged: 1000,
  });
  const t = tally(o);
  equal(t.non2xx, 7);
  equal(t.connectionErrors, 9);
  equal(t.failed, 16);
  equal(t.ok, 997 + 90);
  equal(t.linesLost, 87);
  equal(failed(o), true);
  equal(failed(outcome({ linesLogged: 1099 })), true, "one lost line fails");
  equal(failed(outcome({ exits: [0, 1, 0, 0] })), true, "an unclean exit fails");
  equal(failed(outcome({ error: "replica r3 not UP" })), true);
  const silent = outcome({ keepAlive: { ...outcome().keepAlive!, sent: 1030, tool: "autocannon" }, linesLogged: 1100 });
  equal(tally(silent).inFlightAtStop, 30);
  equal(tally(silent).vanished, 14, "sent, never answered, never an error, beyond one in flight per connection");
  equal(tally(silent).failed, 0, "reported, not counted: the tools' sent counts are approximate");
});

Deno.test("row() and figureMarkdown() give the rollout table: counts as whole numbers, cycle seconds as median (min-max)", () => {
  const table = figureMarkdown([row(outcome(), "shipshape")], ROLLOUT_FIGURES);
  const [head, , line] = table.split("\n");
  match(head, /^\| subject \| sent \(requests\) \| 2xx \(requests\) \| failed \(requests\) \|/);
  equal(
    line,
    "| shipshape | 1,110 | 1,100 | 0 | 0 | 0 | 0 | 100 | 10 | 5.50 (5.00-6.00) | 0 |",
  );
  ok(!table.includes("Ratios"), "no ratio table for the rollout");
  const skipped = figureMarkdown([row(outcome({ keepAlive: undefined, error: "boom" }), "node http")], ROLLOUT_FIGURES);
  match(skipped, /Skipped: node http: boom/);
});

Deno.test("parseOptions() takes the documented options and names a bad one", () => {
  const quick = parseOptions(["--quick"]);
  equal(quick.cycles, 1);
  equal(quick.scale, 0.25);
  deepStrictEqual(quick.modes, ["l4", "l7"]);
  const full = parseOptions(["--container", "--cycles", "6", "--replicas", "3", "--mode", "l4", "--only", "shipshape"]);
  equal(full.cycles, 6);
  equal(full.replicas, 3);
  equal(full.scale, 1);
  equal(full.container, true);
  deepStrictEqual(full.modes, ["l4"]);
  deepStrictEqual(full.only, ["shipshape"]);
  throws(() => parseOptions(["--bogus"]), /^Error: unknown option --bogus$/);
  throws(() => parseOptions(["extra"]), /unknown option extra/);
  throws(() => parseOptions(["--cycles", "0"]), /--cycles/);
  throws(() => parseOptions(["--cycles", "2.5"]), /--cycles/);
  throws(() => parseOptions(["--cycles"]), /--cycles needs a value/);
  throws(() => parseOptions(["--mode", "l3"]), /--mode/);
  throws(() => parseOptions(["--scale", "-1"]), /--scale/);
});

Deno.test("deno task rollout with a bad option prints one line naming it and exits 2", async () => {
  for (const args of [["--bogus"], ["--replicas", "x"]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "bench/rollout.ts", ...args],
      cwd: ROOT,
    })
      .output();
    equal(out.code, 2);
    const stderr = new TextDecoder().decode(out.stderr).trim();
    equal(stderr.split("\n").length, 1, stderr);
    ok(stderr.includes(args[0]), stderr);
  }
});

Deno.test("a rollout of shipshape behind HAProxy (2 replicas, 2 cycles, layer 4 and 7) fails no request and loses no line", async () => {
  const out = Deno.makeTempDirSync({ prefix: "rollout-test-" });
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "bench/rollout.ts",
        "--only",
        "shipshape",
        "--replicas",
        "2",
        "--cycles",
        "2",
        "--scale",
        "0.25",
        "--out",
        out,
      ],
      cwd: ROOT,
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    const record = JSON.parse(Deno.readTextFileSync(`${out}/rollout.json`));
    const outcomes = record.outcomes as (Outcome & { tally: ReturnType<typeof tally> })[];
    deepStrictEqual(outcomes.map((o) => o.mode), ["l4", "l7"]);
    for (const o of outcomes) {
      equal(o.error, undefined, `${o.mode}: ${o.error}`);
      ok(o.tally.ok > 100, `${o.mode}: only ${o.tally.ok} answers`);
      ok(Object.values(o.newConnection!.statuses).length > 0, `${o.mode}: the new-connection client got nothing`);
      equal(o.tally.failed, 0, `${o.mode}: ${JSON.stringify(o.tally)}\n${stderr}`);
      equal(o.tally.linesLost, 0, `${o.mode}: ${JSON.stringify(o.tally)}`);
      deepStrictEqual(o.exits, [0, 0, 0, 0], `${o.mode}: exit codes`);
      equal(o.cyclesMs.length, 2);
    }
    equal(run.code, 0, stderr);
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
});
