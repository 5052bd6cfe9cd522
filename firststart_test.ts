/**
 * The first start on a fresh clone: `deno task run` and `deno task dev` with an empty DENO_DIR fetch nothing (no
 * npm package, no "Download" line, no warning) and answer at once. The test packages are `deno install`'s alone:
 * deno.json's "nodeModulesDir": "manual" stops `deno task` from installing deno.json's imports before every task.
 */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import deno from "./deno.json" with { type: "json" };
import { get, ServerProcess } from "./testing.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** A copy of the files git tracks (as they are in the working tree), as a fresh clone has them; its path. */
function freshClone(): string {
  const listed = new Deno.Command("git", { args: ["ls-files", "-z"], cwd: ROOT, stdout: "piped" }).outputSync();
  equal(listed.code, 0, "git ls-files (git is needed to know the tracked files)");
  const dir = Deno.makeTempDirSync({ prefix: "shipshape-clone-" });
  for (const file of new TextDecoder().decode(listed.stdout).split("\0").filter(Boolean)) {
    const from = `${ROOT}${file}`;
    try {
      Deno.statSync(from);
    } catch {
      continue; // deleted in the working tree
    }
    Deno.mkdirSync(`${dir}/${file}`.replace(/\/[^/]*$/, ""), { recursive: true });
    Deno.copyFileSync(from, `${dir}/${file}`);
  }
  return dir;
}

/** Every file under `dir` (paths relative to it). */
function filesUnder(dir: string): string[] {
  const found: string[] = [];
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.isDirectory) found.push(...filesUnder(`${dir}/${entry.name}`).map((f) => `${entry.name}/${f}`));
      else found.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return found;
}

/** `deno task NAME` in `dir` with the empty cache `denoDir`, as a user types it; PORT=0, HOST=127.0.0.1. */
function task(name: string, dir: string, denoDir: string): Promise<ServerProcess> {
  return ServerProcess.start({ DENO_DIR: denoDir, NO_COLOR: "1" }, [
    "bash",
    "-c",
    'cd "$0" && exec "$1" task "$2"',
    dir,
    Deno.execPath(),
    name,
  ]);
}

/** Asserts that a first start fetched and installed nothing: no npm package, no node_modules, lockfile as it was. */
function assertFetchedNothing(server: ServerProcess, dir: string, denoDir: string, lock: string): void {
  const output = server.stderr + server.lines.join("\n");
  ok(!/Download|Initialize/.test(output), `no download: ${output}`);
  ok(!/Warning/i.test(output), `no warning: ${output}`);
  // Deno creates an empty npm/ directory in any cache; a package would be files under it.
  deepStrictEqual(filesUnder(`${denoDir}/npm`), [], "no npm package in DENO_DIR");
  deepStrictEqual(filesUnder(`${dir}/node_modules`), [], "no node_modules");
  equal(Deno.readTextFileSync(`${dir}/deno.lock`), lock, "deno.lock untouched");
}

Deno.test("deno task run on a fresh clone with an empty DENO_DIR answers /livez and fetches no npm package", async () => {
  const dir = freshClone();
  const denoDir = Deno.makeTempDirSync({ prefix: "shipshape-deno-dir-" });
  const lock = Deno.readTextFileSync(`${dir}/deno.lock`);
  try {
    const server = await task("run", dir, denoDir);
    equal((await get(server.url("/livez"))).status, 200);
    server.kill("SIGTERM");
    equal(await server.exit(), 0, server.stderr);
    assertFetchedNothing(server, dir, denoDir, lock);
    match(server.stderr, /^Task run deno run /m);
  } finally {
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(denoDir, { recursive: true });
  }
});

Deno.test("deno task dev is run's command with --watch: same permissions, restarts on a change, fetches nothing", async () => {
  equal(deno.tasks.dev.command, deno.tasks.run.command.replace(/^deno run /, "deno run --watch "));
  const dir = freshClone();
  const denoDir = Deno.makeTempDirSync({ prefix: "shipshape-deno-dir-" });
  const lock = Deno.readTextFileSync(`${dir}/deno.lock`);
  try {
    const server = await task("dev", dir, denoDir);
    equal((await get(server.url("/livez"))).status, 200);
    // An edit to handler.ts: the watcher drains the running server (SIGTERM) and starts it again on a new port.
    Deno.writeTextFileSync(`${dir}/handler.ts`, "\n// edited\n", { append: true });
    const deadline = Date.now() + 10_000;
    let listening = server.records().filter((r) => r.msg === "listening");
    while (listening.length < 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      listening = server.records().filter((r) => r.msg === "listening");
    }
    equal(listening.length, 2, server.stderr);
    ok(server.records().some((r) => r.msg === "shutdown complete"), "the first server drained before the restart");
    server.port = listening[1].port as number;
    equal((await get(server.url("/livez"))).status, 200);
    // Ctrl-C ends the watcher (SIGTERM only restarts the program under --watch).
    server.kill("SIGINT");
    equal(await server.exit(), 0, server.stderr);
    assertFetchedNothing(server, dir, denoDir, lock);
  } finally {
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(denoDir, { recursive: true });
  }
});

Deno.test("every test package deno.json imports is pinned to an exact version and locked in deno.lock", () => {
  const lock = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.lock`));
  equal(deno.nodeModulesDir, "manual", "deno task installs nothing itself; deno install does, for the tests");
  const imports = Object.values(deno.imports);
  ok(imports.length > 0);
  for (const target of imports) {
    const spec = /^npm:\/?((?:@[^/]+\/)?[^@/]+)@(\d+\.\d+\.\d+)\/?$/.exec(target);
    ok(spec, `${target} names an exact version`);
    equal(lock.specifiers[`npm:${spec[1]}@${spec[2]}`], spec[2], `${target} is in deno.lock`);
  }
});

Deno.test("every task but the server's and the image's installs the npm packages before it runs (nodeModulesDir manual)", () => {
  // With "nodeModulesDir": "manual", a task that imports npm packages without `deno install` first fails on a fresh
  // clone ("Could not find a matching package ... in the node_modules directory"). The server, its image and its
  // executable use none, and must not fetch any.
  const none = ["run", "dev", "image", "compile"];
  for (const [name, task] of Object.entries(deno.tasks)) {
    const script = /^bash (tools\/\S+\.sh)/.exec(task.command)?.[1];
    const text = task.command + (script ? Deno.readTextFileSync(new URL(script, import.meta.url)) : "");
    equal(/\bdeno install\b/.test(text), !none.includes(name), `deno task ${name}: ${task.command}`);
  }
});
