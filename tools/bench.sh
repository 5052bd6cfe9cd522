#!/usr/bin/env bash
# `deno task bench [--quick]`: sets up podman when it is installed (CONTAINERS_CONF for these machines' quirks)
# and builds the image if it is missing, so the container subject is measured; then runs bench/bench.ts.
# Without podman the container subject is skipped with that reason: nothing is installed for a benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v podman >/dev/null 2>&1; then
  . tools/engine.sh
  podman image exists localhost/shipshape:latest || bash tools/image.sh
fi
exec deno run --allow-all bench/bench.ts "$@"
