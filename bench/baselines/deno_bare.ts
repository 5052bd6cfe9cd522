// The throughput reference: a bare Deno.serve server that writes one plain line per request, with the same
// SIGTERM drain as shipshape (without its delay, timeout, probes, metrics or JSON).
//
// The argument picks how much of shipshape's per-request contract (a request id on every answer, nosniff, an access line
// naming method, path, status, bytes, duration, remote, user agent and id) it also carries, each done the
// cheapest way Deno allows, so the benchmark can show what the contract itself costs on this Deno version:
// - "bare" (default): the answer alone. `/` is the demo page with Content-Type only (Deno.serve's header-less
//   fast path), anything else `ok\n` with Deno's default Content-Type.
// - "request-id": the same plus an X-Request-Id header on every response (a fresh UUID). On Deno 2.9 any
//   response header beyond Content-Type moves a response off Deno.serve's header-less fast path.
// - "contract": the same-response floor. It sends the bytes and the headers shipshape sends, in its order, on
//   `/readyz` (X-Request-Id, X-Content-Type-Options, Content-Type) and on `/` (the same page, plus
//   Content-Security-Policy, X-Frame-Options and Referrer-Policy), keeps a sane incoming X-Request-Id (else a
//   fresh UUID), and writes an access line with method, path, status, bytes, duration, remote address, user
//   agent and request id (space-separated, no escaping, no JSON: a floor, not a safe log format). No routing
//   beyond that, no metrics, no readiness state. bench_test.ts compares its answers with shipshape's.
//
// Environment: PORT (8080), HOST (127.0.0.1), VERSION (the version the page names, as shipshape's does).

const encoder = new TextEncoder();
const SANE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const TEXT = "text/plain; charset=utf-8";
const HTML = "text/html; charset=utf-8";
const PAGE_HEADERS = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The demo page, byte for byte as shipshape writes it for this host name and version (handler.ts demoPage). A copy
 * on purpose: this floor runs alone (also in its own container) and must not load shipshape's code; a bench test
 * compares the two servers' raw answers.
 */
export function page(hostname: string, version: string): string {
  return `<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8">
    <title>shipshape</title>
  </head>
  <body>
    <p>This is a demo page!</p>
    <p>Served by <code>${escapeHtml(hostname)}</code>, shipshape ${escapeHtml(version)}.</p>
  </body>
</html>
`;
}

/** The drain measurement's slow request: answers after `path`'s seconds, or undefined for other paths. */
function delayed(req: Request, path: string): Promise<Response> | undefined {
  if (!path.startsWith("/delay/")) return undefined;
  Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200\n`));
  return new Promise((resolve) => setTimeout(() => resolve(new Response("waited\n")), Number(path.slice(7)) * 1000));
}

/** Starts the server in `mode`; resolves when it has drained after SIGTERM (then the process exits 0). */
function serve(mode: string): void {
  if (!["bare", "request-id", "contract"].includes(mode)) throw new Error(`Unknown mode ${mode}`);
  const body = page(Deno.hostname(), Deno.env.get("VERSION") ?? "0.1.0");
  const bodyBytes = encoder.encode(body).length;

  function bare(req: Request): Response | Promise<Response> {
    const path = new URL(req.url).pathname;
    const slow = delayed(req, path);
    if (slow) return slow;
    Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200\n`));
    if (mode === "bare") {
      return path === "/" ? new Response(body, { headers: { "content-type": HTML } }) : new Response("ok\n");
    }
    const id = crypto.randomUUID();
    return path === "/"
      ? new Response(body, { headers: { "x-request-id": id, "content-type": HTML } })
      : new Response("ok\n", { headers: { "x-request-id": id } });
  }

  function contract(req: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> {
    const started = performance.now();
    const path = new URL(req.url).pathname;
    const slow = delayed(req, path);
    if (slow) return slow;
    const incoming = req.headers.get("x-request-id");
    const id = incoming !== null && SANE_ID.test(incoming) ? incoming : crypto.randomUUID();
    const isPage = path === "/";
    const response = isPage
      ? new Response(body, {
        headers: { "x-request-id": id, "x-content-type-options": "nosniff", ...PAGE_HEADERS, "content-type": HTML },
      })
      : new Response("ok\n", {
        headers: { "x-request-id": id, "x-content-type-options": "nosniff", "content-type": TEXT },
      });
    const ms = performance.now() - started;
    const ua = req.headers.get("user-agent") ?? "";
    const remote = (info.remoteAddr as Deno.NetAddr).hostname;
    const bytes = isPage ? bodyBytes : 3;
    Deno.stdout.writeSync(encoder.encode(`${req.method} ${path} 200 ${bytes} ${ms} ${remote} ${ua} ${id}\n`));
    return response;
  }

  const server = Deno.serve(
    {
      hostname: Deno.env.get("HOST") ?? "127.0.0.1",
      port: Number(Deno.env.get("PORT") ?? 8080),
      onListen() {},
    },
    mode === "contract" ? contract : bare,
  );
  Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
}

if (import.meta.main) serve(Deno.args[0] ?? "bare");
