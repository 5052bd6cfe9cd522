#!/usr/bin/env bash
# `deno task test`: the whole suite. Sets up the container engine (tools/engine.sh: podman and runc from apt
# on a fresh Debian machine, CONTAINERS_CONF for its quirks), builds the image (tools/image.sh), then runs
# every test with the op and resource sanitizers on. Arguments go to `deno test` (e.g. a file name).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/engine.sh
bash tools/prometheus.sh # promtool and a Prometheus server for observability_test.ts, from apt when missing
# SHIPSHAPE_IMAGE_PREBUILT=1: test the image SHIPSHAPE_IMAGE names as it is (CI on hosts with registries builds the
# compiled target with podman build); otherwise build it here with no registry.
if [ -n "${SHIPSHAPE_IMAGE_PREBUILT:-}" ]; then
  podman image exists "${SHIPSHAPE_IMAGE:?SHIPSHAPE_IMAGE_PREBUILT needs SHIPSHAPE_IMAGE}" \
    || { echo "test: SHIPSHAPE_IMAGE_PREBUILT is set but $SHIPSHAPE_IMAGE does not exist" >&2; exit 1; }
else
  bash tools/image.sh
fi
exec deno test --allow-all --sanitize-ops --sanitize-resources "$@"
