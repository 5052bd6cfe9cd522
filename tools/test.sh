#!/usr/bin/env bash
# `deno task test`: the whole suite. Installs the test packages (deno install: the npm packages deno.json's imports
# name, pinned by deno.lock, into node_modules/; deno.json's "nodeModulesDir": "manual" keeps every other task,
# `deno task run` first, from fetching them), sets up the container engine (tools/engine.sh: podman and runc from
# apt on a fresh Debian machine, CONTAINERS_CONF for its quirks), builds the image (tools/image.sh), then runs every
# test with the op and resource sanitizers on. Arguments go to `deno test` (e.g. a file name).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test: deno install (the test packages, pinned by deno.lock; about 40 s on a fresh machine, then instant)" >&2
deno install --quiet
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
