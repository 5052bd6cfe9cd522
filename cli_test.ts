/**
 * The command line outside a container, with exactly the flags of `deno task run`: unknown arguments stop the start
 * with exit 2, and `healthcheck` asks a running server's /livez (on loopback, whatever HOST it listens on).
 */

import { equal, match } from "node:assert/strict";
import { freePort, RUN_ARGS, ServerProcess, waitUntil } from "./testing.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** Runs `deno <run flags> main.ts ...args` with only PATH and `env` in its environment. */
async function run(args: string[], env: { [key: string]: string } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...RUN_ARGS, ...args],
    cwd: ROOT,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    clearEnv: true,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** The lines of `text` (which must end in a newline). */
function lines(text: string): string[] {
  equal(text.at(-1), "\n", JSON.stringify(text));
  return text.slice(0, -1).split("\n");
}

Deno.test("main.ts with unknown arguments exits 2 with one line on stderr naming them, and nothing on stdout", async (t) => {
  for (const args of [["bogus"], ["bogus", "two words"], ["healthcheck", "extra"], ["--port=80"]]) {
    await t.step(JSON.stringify(args), async () => {
      const result = await run(args, { PORT: "0", HOST: "127.0.0.1" });
      equal(result.code, 2, result.stderr);
      equal(result.stdout, "", "nothing on stdout: no server started");
      const [line, ...more] = lines(result.stderr);
      equal(more.length, 0, result.stderr);
      match(line, /^shipshape: unknown arguments /);
      equal(line.includes(JSON.stringify(args)), true, `${line} names ${JSON.stringify(args)}`);
    });
  }
});

Deno.test("`healthcheck` outside a container: 0 against a serving server, 1 with one line where nobody serves", async (t) => {
  await t.step("HOST=127.0.0.1: exit 0, and the server saw its GET /livez", async () => {
    const server = await ServerProcess.start({ HOST: "127.0.0.1" });
    try {
      const result = await run(["healthcheck"], { PORT: String(server.port), HOST: "127.0.0.1" });
      equal(result.code, 0, result.stderr);
      equal(result.stdout, "");
      equal(result.stderr, "");
      await waitUntil(() => server.access("/livez").length === 1);
      equal(server.access("/livez")[0].status, 200);
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
  });

  await t.step("a port nobody serves: exit 1, one line on stderr naming the URL", async () => {
    // Not a port in fetch's blocked list (1, 7, 9, ...): there the check fails before it tries to connect at all.
    const port = freePort();
    const result = await run(["healthcheck"], { PORT: String(port), HOST: "127.0.0.1" });
    equal(result.code, 1);
    equal(result.stdout, "");
    const [line, ...more] = lines(result.stderr);
    equal(more.length, 0, result.stderr);
    match(line, new RegExp(`^shipshape: healthcheck: http://127\\.0\\.0\\.1:${port}/livez failed: \\S`));
    equal(/blocked/i.test(line), false, `${line}: refused, not blocked before connecting`);
  });

  await t.step("HOST=:: (all IPv6 and IPv4 addresses): asks over 127.0.0.1, exit 0", async () => {
    const server = await ServerProcess.start({ HOST: "::" });
    try {
      equal(server.records()[0].address, "::");
      const result = await run(["healthcheck"], { PORT: String(server.port), HOST: "::" });
      equal(result.code, 0, result.stderr);
      equal(result.stdout, "");
      equal(result.stderr, "");
      await waitUntil(() => server.access("/livez").length === 1);
      // An IPv4 client on a dual-stack socket shows as an IPv4-mapped IPv6 address.
      match(server.access("/livez")[0].remote as string, /^(::ffff:)?127\.0\.0\.1$/);
    } finally {
      server.kill("SIGTERM");
      equal(await server.exit(), 0);
    }
  });
});
