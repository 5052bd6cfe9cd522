#!/usr/bin/env bash
# `deno task bench [--quick]` and `deno task soak [...]` (first argument "soak"): set up podman when it is
# installed (CONTAINERS_CONF for these machines' quirks) and build the image from this checkout
# (tools/fresh_image.sh), so the container measured runs the code beside it; a failed build stops the benchmark. Then
# run bench/bench.ts or bench/soak.ts. Without podman the container subjects are skipped with that reason: nothing is
# installed for a benchmark. The benchmark builds its other images itself, from local files only
# (bench/subjects.ts): the runtime or compiled target beside SHIPSHAPE_IMAGE (tools/image.sh; compiled only where a
# denort can be had), the bare Deno server on the same base (bench/baselines/deno_bare.Containerfile) and the Go
# floor FROM scratch (tools/go_image.sh, which installs golang-go from apt when it is missing and this is root on
# Debian). A row whose image cannot be built is skipped with a line saying why. SHIPSHAPE_IMAGE_PREBUILT=1 takes
# the images as they are (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v podman >/dev/null 2>&1; then
  . tools/engine.sh
  bash tools/fresh_image.sh
fi
script=bench/bench.ts
if [ "${1:-}" = soak ]; then
  script=bench/soak.ts
  shift
fi
deno install --quiet # the npm packages bench/ imports (deno.json: nodeModulesDir manual)
exec deno run --allow-all "$script" "$@"
