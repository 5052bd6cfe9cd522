import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { Listener } from "./listener.ts";
import { Logger } from "./logging.ts";
import { MemoryWriter, waitUntil } from "./testing.ts";

/** A fake Deno.serve: each server's accept loop ends when the test says so; listening fails while `refuse` is set. */
function fakeServe() {
  const servers: { finished: PromiseWithResolvers<void>; shutdowns: number }[] = [];
  const state = { refuse: undefined as Error | undefined, calls: 0 };
  const serveFn = (options: Deno.ServeTcpOptions) => {
    state.calls++;
    if (state.refuse) throw state.refuse;
    const finished = Promise.withResolvers<void>();
    const entry = { finished, shutdowns: 0 };
    servers.push(entry);
    const port = options.port || 4321;
    queueMicrotask(() => options.onListen?.({ hostname: "127.0.0.1", port, transport: "tcp" }));
    return {
      addr: { hostname: "127.0.0.1", port, transport: "tcp" },
      finished: finished.promise,
      shutdown: () => {
        entry.shutdowns++;
        finished.resolve();
        return finished.promise;
      },
    } as unknown as Deno.HttpServer<Deno.NetAddr>;
  };
  return { servers, state, serveFn };
}

function setup(reportMs = 60_000) {
  const out = new MemoryWriter();
  const fake = fakeServe();
  const states: boolean[] = [];
  const listener = new Listener({
    serve: { port: 0 },
    handler: () => new Response("ok"),
    logger: new Logger({ writer: out }),
    fields: { version: "t" },
    onState: (listening) => states.push(listening),
    reportMs,
    serveFn: fake.serveFn,
  });
  return { out, fake, states, listener };
}

Deno.test("Listener listens, logs one listening line with its fields, and reports the state", async () => {
  const { out, states, listener } = setup();
  listener.listen();
  await waitUntil(() => out.lines.length === 1);
  deepStrictEqual(
    out.records().map(({ msg, port, version }) => ({ msg, port, version })),
    [{ msg: "listening", port: 4321, version: "t" }],
  );
  deepStrictEqual(states, [true]);
  await listener.shutdown();
  deepStrictEqual(states, [true, false]);
});

Deno.test("Listener listens again on the same port after its accept loop fails, with one line for each", async () => {
  const { out, fake, states, listener } = setup();
  listener.listen();
  await waitUntil(() => out.lines.length === 1);
  fake.servers[0].finished.reject(new Error("EMFILE"));
  await waitUntil(() => out.records().some((r) => r.msg === "listening again"));
  deepStrictEqual(out.records().map((r) => r.msg), [
    "listening",
    "accept loop failed: listening again as soon as possible",
    "listening again",
  ]);
  equal(out.records()[2].port, 4321, "the same port");
  deepStrictEqual(states, [true, false, true]);
  await listener.shutdown();
  equal(fake.servers[1].shutdowns, 1, "the live server drains");
  equal(fake.servers[0].shutdowns, 1, "the failed one is drained too: its connections may still be writing answers");
});

Deno.test("Listener says so, rate-limited, while listening again keeps failing (a port taken by someone else)", async () => {
  const { out, fake, listener } = setup(300);
  listener.listen();
  await waitUntil(() => out.lines.length === 1);
  fake.state.refuse = new Deno.errors.AddrInUse("address in use");
  fake.servers[0].finished.reject(new Error("EMFILE"));
  await waitUntil(() => out.records().filter((r) => r.msg === "still not listening").length >= 2, 10_000);
  const still = out.records().filter((r) => r.msg === "still not listening");
  ok(fake.state.calls > still.length + 1, `retried ${fake.state.calls - 1} times, said so ${still.length} times`);
  ok((still[1].attempts as number) > (still[0].attempts as number));
  fake.state.refuse = undefined;
  await waitUntil(() => out.records().some((r) => r.msg === "listening again"), 5_000);
  await listener.shutdown();
});

Deno.test("Listener stops retrying once shut down", async () => {
  const { out, fake, listener } = setup();
  listener.listen();
  await waitUntil(() => out.lines.length === 1);
  fake.state.refuse = new Error("refused");
  fake.servers[0].finished.reject(new Error("EMFILE"));
  await waitUntil(() => fake.state.calls >= 2);
  await listener.shutdown();
  const calls = fake.state.calls;
  await new Promise((resolve) => setTimeout(resolve, 300));
  equal(fake.state.calls, calls, "no attempt after shutdown");
});
