#!/usr/bin/env bash
# Load balancer setup for `deno task rollout` and its test: leaves haproxy on PATH. On a Debian machine as root
# with no haproxy, installs it from apt first (said on stderr); where it cannot be installed, one line and exit 1.
# Installing starts nothing here (no systemd); the rollout runs its own haproxy with its own config.
set -euo pipefail

say() { printf 'haproxy: %s\n' "$*" >&2; }

if command -v haproxy >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "no haproxy on this machine, and no way to install it (needs root and apt-get): install haproxy"
  exit 1
fi
say "no haproxy on this machine: installing haproxy from apt"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } >&2 ||
  ! command -v haproxy >/dev/null 2>&1; then
  say "could not install haproxy from apt (apt-get install -y haproxy failed): install haproxy"
  exit 1
fi
