/**
 * Overload in the real image at the manifest's memory limit: a flood of slow requests at twice the in-flight
 * budget (MAX_IN_FLIGHT) must not OOM-kill or hang the container, the probes keep answering within their
 * timeouts, the excess gets the fast 503 with Retry-After, and memory comes back under the budget line after.
 *
 * The container runs through podman (tools/test.sh sets it up); without podman the test fails, never skips.
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { Flood, type Head, statusCounts } from "./bench/flood.ts";
import { LimitedContainer, manifestContainer, type Memory, quantityBytes } from "./bench/memory.ts";
import { SETTINGS } from "./config.ts";
import { getFresh, sleep } from "./testing.ts";

/** The image under test. */
const IMAGE = Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest";
const MIB = 1024 * 1024;

/** The in-flight limit the manifest runs with: its env, else the setting's default. */
function maxInFlight(env: { [name: string]: string }): number {
  const settings = SETTINGS as unknown as { [name: string]: { default: string } | undefined };
  const value = env.MAX_IN_FLIGHT ?? settings.MAX_IN_FLIGHT?.default;
  if (value === undefined) throw new Error("MAX_IN_FLIGHT is neither in the manifest's env nor a setting of config.ts");
  return Number(value);
}

/** This process's soft limit on open files (each flood connection is one). */
function openFileLimit(): number {
  const line = /^Max open files\s+(\d+|unlimited)/m.exec(Deno.readTextFileSync("/proc/self/limits"));
  return line?.[1] === "unlimited" ? Infinity : Number(line?.[1] ?? 0);
}

/** One probe of a path on a fresh connection, as the kubelet sends it: its status, or 0 past the timeout. */
async function probe(url: string, timeoutMs: number): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  using client = Deno.createHttpClient({});
  try {
    const res = await fetch(url, { client, signal: abort.signal });
    await res.text();
    return { status: res.status, ms: performance.now() - started };
  } catch {
    return { status: 0, ms: performance.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("a flood of slow requests at twice MAX_IN_FLIGHT, at the manifest's memory limit: no OOM, probes answer, excess 503", async () => {
  const spec = manifestContainer();
  const env: { [name: string]: string } = Object.fromEntries(
    spec.env.map((e: { name: string; value: string }) => [e.name, e.value]),
  );
  const limit = quantityBytes(spec.resources.limits.memory);
  const line = quantityBytes(spec.resources.requests.memory);
  const budget = maxInFlight(env);
  const flood = 2 * budget;
  ok(budget >= 1, `MAX_IN_FLIGHT ${budget}`);
  ok(openFileLimit() >= flood + 200, `this process may open ${openFileLimit()} files; the flood needs ${flood + 200}`);
  const probes = {
    "/livez": spec.livenessProbe.timeoutSeconds * 1000,
    "/readyz": spec.readinessProbe.timeoutSeconds * 1000,
  };

  const container = await LimitedContainer.start(IMAGE, limit, env);
  const samples: Memory[] = [];
  const answers: { path: string; status: number; ms: number }[] = [];
  let flooding = true;
  let connections: Flood | undefined;
  try {
    // Probes and memory readings for the whole flood, one probe of each path every 500 ms (the kubelet probes
    // /readyz every 2 s and /livez every 10 s: this is stricter).
    const watching = (async () => {
      while (flooding) {
        try {
          samples.push(container.memory());
        } catch { /* the process is gone: the container's state says why, below */ }
        const round = Object.entries(probes).map(async ([path, timeoutMs]) => {
          answers.push({ path, ...await probe(container.url(path), timeoutMs) });
        });
        await Promise.all([...round, sleep(500)]);
      }
    })();
    const started = performance.now();
    connections = await Flood.open(container.port, "inflight", flood);
    const openedMs = performance.now() - started;
    let heads: Head[] = [];
    try {
      heads = await connections.heads();
    } finally {
      connections.close();
      flooding = false;
      await watching;
    }

    const state = await container.state();
    deepStrictEqual(state, { running: true, exitCode: 0, oomKilled: false }, "the container survived the flood");
    equal(connections.failed, 0, "every connection of the flood was accepted");
    const counts = statusCounts(heads);
    deepStrictEqual(Object.keys(counts).sort(), ["200", "503"], `only 200 and 503: ${JSON.stringify(counts)}`);
    // All were sent within the 10 s delay, so at most `budget` were in flight together and the rest were refused.
    ok(openedMs < 9000, `the flood opened in ${openedMs.toFixed(0)} ms`);
    equal(counts[200] + counts[503], flood);
    ok(counts[200] <= budget, `${counts[200]} served, at most the budget ${budget}`);
    ok(counts[503] >= flood - budget, `${counts[503]} refused, at least ${flood - budget}`);
    for (const head of heads.filter((h) => h.status === 503)) {
      equal(head.headers.get("retry-after"), "1");
      equal(head.headers.get("connection"), "close");
      ok(head.ms < 5000, `a 503 took ${head.ms.toFixed(0)} ms: not the fast path (/delay/10 answers after 10 s)`);
    }

    ok(answers.length >= 2 * Object.keys(probes).length, `${answers.length} probes during the flood`);
    const late = answers.filter((a) => a.status !== 200);
    deepStrictEqual(late, [], "every probe answered 200 within its timeoutSeconds");

    const peak = Math.max(...samples.map((m) => m.cgroup!));
    ok(peak < limit, `peak ${(peak / MIB).toFixed(1)} MiB under the limit ${(limit / MIB).toFixed(1)} MiB`);

    // After the flood: the server lets go, and memory (the cgroup's charge and the process's RSS, the binary's
    // pages included) comes back under the request, the budget line the manifest states.
    // V8 gives memory back some seconds after a flood (15-20 s in bench/results/memory.md's runs): wait up to 40 s.
    let after = container.memory();
    const deadline = Date.now() + 40_000;
    while ((after.cgroup! >= line || after.rss >= line) && Date.now() < deadline) {
      await sleep(500);
      after = container.memory();
    }
    ok(after.cgroup! < line, `cgroup ${(after.cgroup! / MIB).toFixed(1)} MiB after, line ${(line / MIB).toFixed(1)}`);
    ok(after.rss < line, `RSS ${(after.rss / MIB).toFixed(1)} MiB after, line ${(line / MIB).toFixed(1)} MiB`);
    equal((await getFresh(container.url("/livez"))).status, 200);

    const exit = await container.stop();
    equal(exit, 0, "a clean drain after the flood");
    const logs = (await container.logs()).filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    equal(logs.at(-1).msg, "shutdown complete");
    const refused = logs.filter((r) => r.msg === "access" && r.status === 503 && r.path === "/delay/10").length;
    equal(refused, counts[503], "an access line for every refused request");
  } finally {
    connections?.close();
    await container.remove();
  }
});
