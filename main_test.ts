/** The real server as a child process, started with exactly the flags of `deno task run`. */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import deno from "./deno.json" with { type: "json" };
import { VARIABLES } from "./config.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** The arguments `deno task run` passes to deno, so the tests run with the same least privilege. */
export const RUN_ARGS: string[] = deno.tasks.run.command.split(" ").slice(1);

type Record = { [key: string]: unknown };

/** A running server process: its stdout lines, parsed, and its stderr text. */
class ServerProcess {
  readonly lines: string[] = [];
  stderr = "";
  port = 0;
  #child: Deno.ChildProcess;
  #stdoutDone: Promise<void>;
  #stderrDone: Promise<void>;
  #waiters: (() => void)[] = [];

  constructor(env: { [key: string]: string }, args: string[] = RUN_ARGS) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      env: { PORT: "0", HOST: "127.0.0.1", ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdoutDone = this.#readLines();
    this.#stderrDone = this.#readStderr();
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) this.stderr += chunk;
  }

  async #readLines(): Promise<void> {
    let pending = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      const parts = (pending + chunk).split("\n");
      pending = parts.pop() ?? "";
      this.lines.push(...parts);
      for (const wake of this.#waiters.splice(0)) wake();
    }
    if (pending) this.lines.push(pending);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Every stdout line parsed as JSON (fails the test on a line that is not). */
  records(): Record[] {
    return this.lines.map((line) => JSON.parse(line));
  }

  /** Waits until a record with this msg appears on stdout; fails after `ms`. */
  async waitFor(msg: string, ms = 10_000): Promise<Record> {
    const deadline = Date.now() + ms;
    while (true) {
      const found = this.records().find((r) => r.msg === msg);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no "${msg}" line within ${ms} ms; stdout: ${this.lines}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Starts the server and waits for its "listening" line. */
  static async start(env: { [key: string]: string } = {}): Promise<ServerProcess> {
    const server = new ServerProcess(env);
    const listening = await server.waitFor("listening");
    server.port = listening.port as number;
    return server;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Waits for the exit and for both streams to close; returns the exit code. */
  async exit(): Promise<number> {
    const status = await this.#child.status;
    await Promise.all([this.#stdoutDone, this.#stderrDone]);
    return status.code;
  }

  /** Access records of requests to this path. */
  access(path: string, method = "GET"): Record[] {
    return this.records().filter((r) => r.msg === "access" && r.path === path && r.method === method);
  }
}

/** GET on a fresh connection (its own client), so it tests what a new connection gets. */
async function getFresh(url: string): Promise<{ status: number; body: string }> {
  using client = Deno.createHttpClient({});
  const res = await fetch(url, { client });
  return { status: res.status, body: await res.text() };
}

async function get(url: string, init?: RequestInit): Promise<Response & { text_: string }> {
  const res = await fetch(url, init);
  return Object.assign(res, { text_: await res.text() });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("main.ts serves every endpoint and logs one JSON access line per request on stdout only", async () => {
  const server = await ServerProcess.start();
  try {
    const listening = server.records()[0];
    equal(listening.msg, "listening");
    equal(listening.address, "127.0.0.1");
    equal(listening.version, deno.version);
    equal(typeof listening.pid, "number");

    const cases: [string, number, RegExp][] = [
      ["/", 200, /This is a demo page!/],
      ["/livez", 200, /^ok\n$/],
      ["/healthz", 200, /^ok\n$/],
      ["/readyz", 200, /^ok\n$/],
      ["/info", 200, /"version":"\d+\.\d+\.\d+"/],
      ["/delay/0.1", 200, /^waited 0.1s\n$/],
      ["/delay/nope", 400, /bad delay/],
      ["/status/418", 418, /^status 418\n$/],
      ["/status/42", 400, /bad status/],
      ["/missing", 404, /not found/],
      ["/metrics", 200, /http_requests_total\{method="GET",route="\/status\/:code",code="418"\} 1/],
    ];
    const bodies = new Map<string, string>();
    for (const [path, status, body] of cases) {
      const res = await get(server.url(path));
      bodies.set(path, res.text_);
      equal(res.status, status, path);
      match(res.text_, body, path);
      match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, path);
    }
    const post = await get(server.url("/"), { method: "POST", body: "x" });
    equal(post.status, 405);
    equal(post.headers.get("allow"), "GET, HEAD");
    const head = await get(server.url("/"), { method: "HEAD" });
    equal(head.status, 200);
    equal(head.text_, "");
    deepStrictEqual(Object.keys(JSON.parse(bodies.get("/info")!)), [
      "version",
      "hostname",
      "deno",
      "v8",
      "typescript",
      "uptime_seconds",
    ]);

    for (const [path, status] of cases) {
      equal(server.access(path).length, 1, path);
      equal(server.access(path)[0].status, status, path);
    }
  } finally {
    server.kill("SIGTERM");
    equal(await server.exit(), 0);
  }
  equal(server.stderr, "", "nothing on stderr");
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`main.ts exits 0 soon after ${signal} when idle, with shutdown lines`, async () => {
    const server = await ServerProcess.start();
    const started = performance.now();
    server.kill(signal);
    equal(await server.exit(), 0);
    ok(performance.now() - started < 2000, "well under the 2 s bound");
    const msgs = server.records().map((r) => r.msg);
    deepStrictEqual(msgs, ["listening", "shutdown started", "shutdown complete"]);
    equal(server.records()[1].signal, signal);
    equal(server.stderr, "");
  });
}

Deno.test("main.ts drains: /readyz 503 and new connections served during the delay, refused after, in-flight all answered", async () => {
  const server = await ServerProcess.start({ SHUTDOWN_DELAY: "1", SHUTDOWN_TIMEOUT: "5" });
  const inFlight = Array.from({ length: 4 }, () => getFresh(server.url("/delay/2")));
  await sleep(200); // let the four requests reach the handler
  server.kill("SIGTERM");
  const started = await server.waitFor("shutdown started");
  equal(started.in_flight, 4);

  // During the delay: readiness fails, but new connections are still accepted and served.
  const ready = await getFresh(server.url("/readyz"));
  equal(ready.status, 503);
  equal((await getFresh(server.url("/livez"))).status, 200);
  equal((await getFresh(server.url("/delay/0.1"))).status, 200);

  // After the delay the listener is closed: a new connection is refused.
  await sleep(1100);
  const refused = await getFresh(server.url("/livez")).then(() => "answered", (e) => e.name);
  equal(refused, "TypeError");

  const answers = await Promise.all(inFlight);
  deepStrictEqual(answers.map((a) => a.status), [200, 200, 200, 200]);
  equal(await server.exit(), 0);
  equal(server.access("/delay/2").length, 4);
  equal(server.access("/readyz")[0].status, 503);
  const last = server.records().at(-1)!;
  equal(last.msg, "shutdown complete");
  ok((last.duration_ms as number) >= 1000);
  equal(server.stderr, "");
});

Deno.test("main.ts exits 1 when the drain times out, naming how many requests were cut off", async () => {
  const server = await ServerProcess.start({ SHUTDOWN_TIMEOUT: "0.5" });
  const stuck = [getFresh(server.url("/delay/5")), getFresh(server.url("/delay/5"))].map((p) =>
    p.then(() => "answered", () => "cut off")
  );
  await sleep(200);
  const signalled = performance.now();
  server.kill("SIGTERM");
  equal(await server.exit(), 1);
  const took = performance.now() - signalled;
  ok(took >= 450 && took < 3000, `exit after ${took} ms`);
  deepStrictEqual(await Promise.all(stuck), ["cut off", "cut off"]);
  const last = server.records().at(-1)!;
  equal(last.level, "error");
  match(last.msg as string, /shutdown timed out/);
  equal(last.cut_off, 2);
});

Deno.test("main.ts exits at once, non-zero, on a second signal", async () => {
  const server = await ServerProcess.start({ SHUTDOWN_DELAY: "30" });
  server.kill("SIGTERM");
  await server.waitFor("shutdown started");
  const signalled = performance.now();
  server.kill("SIGINT");
  equal(await server.exit(), 130);
  ok(performance.now() - signalled < 2000);
  const last = server.records().at(-1)!;
  equal(last.msg, "second signal: exiting at once");
  equal(last.signal, "SIGINT");
});

Deno.test("main.ts refuses each bad setting with exit 2 and one line naming the variable", async () => {
  const bad: { [key: string]: string } = {
    PORT: "eighty",
    HOST: "no such host!",
    LOG_LEVEL: "loud",
    LOG_FORMAT: "xml",
    SHUTDOWN_DELAY: "-1",
    SHUTDOWN_TIMEOUT: "forever",
  };
  deepStrictEqual(Object.keys(bad).sort(), [...VARIABLES].sort());
  await Promise.all(
    Object.entries(bad).map(async ([name, value]) => {
      const server = new ServerProcess({ [name]: value });
      equal(await server.exit(), 2, name);
      deepStrictEqual(server.lines, [], `${name}: nothing on stdout`);
      const lines = server.stderr.trimEnd().split("\n");
      equal(lines.length, 1, `${name}: ${server.stderr}`);
      match(lines[0], new RegExp(`^shipshape: ${name}=${JSON.stringify(value)} is not valid: expected `));
    }),
  );
});

Deno.test("main.ts writes text-format access lines in the Common Log Format when LOG_FORMAT=text", async () => {
  const server = new ServerProcess({ LOG_FORMAT: "text" });
  const deadline = Date.now() + 10_000;
  while (!server.lines.some((l) => l.includes(" listening ")) && Date.now() < deadline) await sleep(50);
  const port = Number(/port=(\d+)/.exec(server.lines.join("\n"))?.[1]);
  const res = await fetch(`http://127.0.0.1:${port}/status/201`, { headers: { "user-agent": 'evil"agent' } });
  await res.body?.cancel();
  server.kill("SIGTERM");
  equal(await server.exit(), 0);
  const access = server.lines.find((l) => l.includes('"GET /status/201"'));
  match(access ?? "", /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/status\/201" 201 11 "/);
  equal(server.lines.length, 4, server.lines.join("\n")); // listening, access, shutdown started, complete
});
