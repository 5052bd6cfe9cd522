"""The tutorial's server, final version, as the benchmark's Python baseline.

What the tutorial ended with: http.server, a SIGTERM handler that shuts the server down and exits at once,
and access lines written to stdout without buffering. Added here only what the benchmark calls: /readyz and
/delay/{seconds}, and a threading server so that concurrent requests are served concurrently (the tutorial's
single-threaded HTTPServer would answer ten 1 s requests one after another).
"""

import http.server
import os
import signal
import sys
import threading
import time

PAGE = b"""<!DOCTYPE html>
<html>
    <head>
        <title>Hello!</title>
    </head>
    <body>
        <p>This is a demo page!</p>
    </body>
</html>"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the other subjects

    def do_GET(self):
        if self.path.startswith("/delay/"):
            time.sleep(min(float(self.path[len("/delay/"):]), 10))
            body, kind = b"waited\n", "text/plain"
        elif self.path == "/readyz":
            body, kind = b"ok\n", "text/plain"
        else:
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        # The tutorial's fix for `kubectl logs`: access lines to stdout, flushed at once.
        sys.stdout.write("%s - - [%s] %s\n" % (self.address_string(), self.log_date_time_string(), format % args))
        sys.stdout.flush()


if __name__ == "__main__":
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)
    httpd.daemon_threads = True

    def do_shutdown(signum, frame):
        threading.Thread(target=httpd.shutdown).start()
        sys.exit(0)

    signal.signal(signal.SIGTERM, do_shutdown)
    httpd.serve_forever()
