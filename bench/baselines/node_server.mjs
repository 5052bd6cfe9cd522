// The benchmark's Node baseline: node:http with the same behaviour as the Python baseline (SIGTERM handled,
// one access line per request written to stdout synchronously), using Node's own graceful close: stop
// accepting, close idle keep-alive connections, exit when the in-flight requests are done.
import http from "node:http";
import { writeSync } from "node:fs";

const page =
  "<!DOCTYPE html>\n<html><head><title>Hello!</title></head><body><p>This is a demo page!</p></body></html>\n";

const server = http.createServer((req, res) => {
  const answer = (body, type) => {
    res.writeHead(200, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
    writeSync(1, `${req.socket.remoteAddress} - - [${new Date().toUTCString()}] "${req.method} ${req.url}" 200\n`);
  };
  if (req.url.startsWith("/delay/")) {
    setTimeout(() => answer("waited\n", "text/plain"), Math.min(Number(req.url.slice(7)), 10) * 1000);
  } else if (req.url === "/readyz") {
    answer("ok\n", "text/plain");
  } else {
    answer(page, "text/html");
  }
});

process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});

server.listen(Number(process.env.PORT ?? 8080), "127.0.0.1");
