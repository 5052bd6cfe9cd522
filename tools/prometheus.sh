#!/usr/bin/env bash
# Prometheus for the observability tests: `bash tools/prometheus.sh` (tools/test.sh runs it; observability_test.ts
# runs it when prometheus or promtool is missing).
#
# Leaves `prometheus` (the server) and `promtool` on PATH. On a Debian machine as root without them, installs
# Debian's prometheus package (both binaries; no systemd here, so installing it starts nothing). Says what it does
# on stderr; fails loudly when it cannot install, never skips.
set -euo pipefail

prometheus_say() { printf 'prometheus: %s\n' "$*" >&2; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  prometheus_say "no prometheus/promtool on this machine: installing Debian's prometheus package from apt"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
else
  prometheus_say "no prometheus/promtool on this machine, and no way to install them (needs root and apt-get):" \
    "install the prometheus package"
  exit 1
fi
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  prometheus_say "the prometheus package is installed but prometheus or promtool is still not on PATH"
  exit 1
fi
prometheus_say "installed $(prometheus --version 2>&1 | head -n 1)"
