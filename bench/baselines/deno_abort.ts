// The rollout's Deno baseline: a bare Deno.serve server stopped the way most examples stop one, by aborting the
// serve signal on SIGTERM. No readiness flip, no delay: the abort closes the listener and every connection at
// once (in-flight requests get an empty reply). One plain access line per request on stdout.
const encoder = new TextEncoder();
const controller = new AbortController();
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8080),
  signal: controller.signal,
  onListen() {},
}, (req) => {
  Deno.stdout.writeSync(encoder.encode(`${req.method} ${new URL(req.url).pathname} 200\n`));
  return new Response("ok\n");
});
Deno.addSignalListener("SIGTERM", () => controller.abort());
await server.finished;
