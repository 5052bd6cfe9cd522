#!/usr/bin/env bash
# `deno task memory [...]`: set up podman (CONTAINERS_CONF for these machines' quirks), build the image from this
# checkout (tools/fresh_image.sh), then run bench/memory.ts: memory per idle, half-open and in-flight connection, process and container.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/engine.sh
bash tools/fresh_image.sh
deno install --quiet
exec deno run --allow-all bench/memory.ts "$@"
