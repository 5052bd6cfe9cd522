#!/usr/bin/env bash
# `deno task test`: the whole suite. Sets up the container engine (tools/engine.sh: podman and runc from apt
# on a fresh Debian machine, CONTAINERS_CONF for its quirks), builds the image (tools/image.sh), then runs
# every test with the op and resource sanitizers on. Arguments go to `deno test` (e.g. a file name).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/engine.sh
bash tools/image.sh
exec deno test --allow-all --sanitize-ops --sanitize-resources "$@"
