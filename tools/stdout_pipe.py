#!/usr/bin/env python3
"""Runs a command with its stdout on a pipe that this script controls, to test the log contract.

    stdout_pipe.py [--nonblocking] [--pause SECONDS] -- COMMAND...

--nonblocking sets O_NONBLOCK on the pipe's write end before the command starts (as some parents do), so
its writes to a full pipe fail with EAGAIN (Deno: WouldBlock) instead of waiting. --pause leaves the pipe
unread for that long after the command's first line, so it fills up. Everything read is relayed, unchanged,
to this script's stdout. SIGTERM and SIGINT are passed on to the command; the exit code is the command's.
"""

import argparse
import os
import select
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nonblocking", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    read_end, write_end = os.pipe()
    if args.nonblocking:
        os.set_blocking(write_end, False)
    child = subprocess.Popen(command, stdout=write_end)
    os.close(write_end)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))

    out = sys.stdout.buffer
    first_line_seen = False
    paused_until = None
    while True:
        if paused_until is not None:
            remaining = paused_until - time.monotonic()
            if remaining > 0:
                time.sleep(min(remaining, 0.05))
                continue
            paused_until = None
        try:
            ready, _, _ = select.select([read_end], [], [], 0.5)
        except InterruptedError:
            continue
        if not ready:
            continue
        data = os.read(read_end, 65536)
        if not data:
            break
        out.write(data)
        out.flush()
        if not first_line_seen and b"\n" in data:
            first_line_seen = True
            if args.pause > 0:
                paused_until = time.monotonic() + args.pause
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
