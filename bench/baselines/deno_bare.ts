// The throughput reference: a bare Deno.serve server that writes one plain line per request, with the same
// SIGTERM drain as shipshape (without its delay, timeout, probes, metrics or JSON).
const encoder = new TextEncoder();
const server = Deno.serve(
  { hostname: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 8080), onListen() {} },
  (req) => {
    const path = new URL(req.url).pathname;
    Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200\n`));
    if (path.startsWith("/delay/")) {
      return new Promise((resolve) =>
        setTimeout(() => resolve(new Response("waited\n")), Number(path.slice(7)) * 1000)
      );
    }
    return new Response("ok\n");
  },
);
Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
