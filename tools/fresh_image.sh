#!/usr/bin/env bash
# The image the benchmarks measure (bench, soak, memory, rollout --container): with SHIPSHAPE_IMAGE unset, build
# localhost/shipshape:latest from this checkout every time (tools/image.sh; with the layer cache an unchanged tree takes
# seconds), so a benchmark never measures an image left over from older code. An image that SHIPSHAPE_IMAGE names is
# measured as it is when it exists (CI builds the compiled target with podman build), and built when it does not.
# Needs podman set up first (tools/engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SHIPSHAPE_IMAGE:-}" ] && podman image exists "$SHIPSHAPE_IMAGE"; then
  echo "image: measuring $SHIPSHAPE_IMAGE as it is (SHIPSHAPE_IMAGE)" >&2
  exit 0
fi
exec bash tools/image.sh
