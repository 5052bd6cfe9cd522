// The throughput reference: a bare Deno.serve server that writes one plain line per request, with the same
// SIGTERM drain as shipshape (without its delay, timeout, probes, metrics or JSON). With the argument
// "request-id" it also sets an X-Request-Id header on every response, as shipshape must: on Deno 2.9 any
// response header moves a response off Deno's header-less fast path, and this variant shows what that costs.
const encoder = new TextEncoder();
const withRequestId = Deno.args[0] === "request-id";
const server = Deno.serve(
  { hostname: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 8080), onListen() {} },
  (req) => {
    const path = new URL(req.url).pathname;
    Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200\n`));
    const init = withRequestId ? { headers: { "x-request-id": crypto.randomUUID() } } : undefined;
    if (path.startsWith("/delay/")) {
      return new Promise((resolve) =>
        setTimeout(() => resolve(new Response("waited\n", init)), Number(path.slice(7)) * 1000)
      );
    }
    return new Response("ok\n", init);
  },
);
Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
