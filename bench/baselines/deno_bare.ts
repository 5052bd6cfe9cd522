// The throughput reference: a bare Deno.serve server that writes one plain line per request, with the same
// SIGTERM drain as shipshape (without its delay, timeout, probes, metrics or JSON).
//
// The argument picks how much of shipshape's per-request contract (issue #2, #6) it also carries, each done the
// cheapest way Deno allows, so the benchmark can show what the contract itself costs on this Deno version:
// - "request-id": an X-Request-Id header on every response (a fresh UUID). On Deno 2.9 any response header
//   beyond Content-Type moves a response off Deno.serve's header-less fast path.
// - "contract": what every shipshape request must do and nothing more: keep a sane incoming X-Request-Id
//   (else a fresh UUID), answer with X-Request-Id and X-Content-Type-Options, and write an access line with
//   method, path, status, bytes, duration, remote address, user agent and request id (space-separated, no
//   escaping, no JSON: a floor, not a safe log format). No routes, metrics or readiness state.
const encoder = new TextEncoder();
const mode = Deno.args[0] ?? "bare";
if (!["bare", "request-id", "contract"].includes(mode)) throw new Error(`unknown mode ${mode}`);
const SANE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The drain measurement's slow request: answers after `path`'s seconds, or undefined for other paths. */
function delayed(req: Request, path: string): Promise<Response> | undefined {
  if (!path.startsWith("/delay/")) return undefined;
  Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200\n`));
  return new Promise((resolve) => setTimeout(() => resolve(new Response("waited\n")), Number(path.slice(7)) * 1000));
}

function bare(req: Request): Response | Promise<Response> {
  const path = new URL(req.url).pathname;
  const slow = delayed(req, path);
  if (slow) return slow;
  Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200\n`));
  if (mode === "bare") return new Response("ok\n");
  return new Response("ok\n", { headers: { "x-request-id": crypto.randomUUID() } });
}

function contract(req: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> {
  const started = performance.now();
  const path = new URL(req.url).pathname;
  const slow = delayed(req, path);
  if (slow) return slow;
  const incoming = req.headers.get("x-request-id");
  const id = incoming !== null && SANE_ID.test(incoming) ? incoming : crypto.randomUUID();
  const response = new Response("ok\n", { headers: { "x-request-id": id, "x-content-type-options": "nosniff" } });
  const ms = performance.now() - started;
  const ua = req.headers.get("user-agent") ?? "";
  const remote = (info.remoteAddr as Deno.NetAddr).hostname;
  Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200 3 ${ms} ${remote} ${ua} ${id}\n`));
  return response;
}

const server = Deno.serve(
  { hostname: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 8080), onListen() {} },
  mode === "contract" ? contract : bare,
);
Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
