#!/usr/bin/env bash
# The benchmark's container floor: bench/baselines/go_server built as a static binary (Debian's golang-go,
# standard library only, CGO_ENABLED=0) into an image FROM scratch that holds that one file and runs it as
# 65532:65532. No registry and no module proxy needed. Installs golang-go from apt when go is missing and this
# is root on Debian (and says so); otherwise fails with one line saying why.
#
#   bash tools/go_image.sh [TAG]      default TAG: localhost/shipshape-bench-go:latest
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/engine.sh

say() { printf 'go_image: %s\n' "$*" >&2; }
image=${1:-localhost/shipshape-bench-go:latest}

if ! command -v go >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "no go on this machine: installing golang-go from apt"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >&2; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >&2
    fi
  else
    say "no go on this machine, and no way to install it (needs root and apt-get): install golang-go"
    exit 1
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-${HOME:-$work}/.cache}/go-build}
(cd bench/baselines/go_server && CGO_ENABLED=0 GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$work/server" .)
podman build --quiet --format docker -t "$image" -f bench/baselines/go_server/Containerfile "$work" >/dev/null
echo "built $image: $(go version | awk '{print $3}'), image $(podman image inspect --format '{{.Size}}' "$image") bytes, /server $(stat -c %s "$work/server") bytes"
