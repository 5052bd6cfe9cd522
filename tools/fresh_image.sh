#!/usr/bin/env bash
# The image the benchmarks measure (bench, soak, memory, rollout --container): built from this checkout at every run
# (tools/image.sh, tagged SHIPSHAPE_IMAGE or localhost/shipshape:latest; with the layer cache an unchanged tree takes
# seconds), so a benchmark never measures an image left over from older code. SHIPSHAPE_IMAGE_PREBUILT=1, as for
# tools/test.sh, measures the existing image SHIPSHAPE_IMAGE names as it is (CI builds the compiled target with
# podman build). Needs podman set up first (tools/engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SHIPSHAPE_IMAGE_PREBUILT:-}" ]; then
  podman image exists "${SHIPSHAPE_IMAGE:?SHIPSHAPE_IMAGE_PREBUILT needs SHIPSHAPE_IMAGE}" \
    || { echo "image: SHIPSHAPE_IMAGE_PREBUILT is set but $SHIPSHAPE_IMAGE does not exist" >&2; exit 1; }
  echo "image: measuring $SHIPSHAPE_IMAGE as it is (SHIPSHAPE_IMAGE_PREBUILT)" >&2
  exit 0
fi
exec bash tools/image.sh
