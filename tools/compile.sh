#!/usr/bin/env bash
# `deno task compile`: the single executable ./shipshape, with the permissions of `deno task run` baked in.
# deno compile needs denort (the runtime without the tooling) of the same version: it downloads it from
# dl.deno.land, or takes the file DENORT_BIN names. Where neither works this fails with one line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
# The flags come from the run task itself, so the two cannot drift apart.
read -r -a flags <<< "$(deno eval 'const d = JSON.parse(Deno.readTextFileSync("deno.json"));
console.log(d.tasks.run.command.split(" ").filter((a) => a.startsWith("--allow-")).join(" "))')"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! deno compile "${flags[@]}" --exclude node_modules --output shipshape main.ts >"$log" 2>&1; then
  version=$(deno --version | awk 'NR==1{print $2}')
  if grep -qiE "dl\.deno\.land|dns error|download|denort" "$log" && [ -z "${DENORT_BIN:-}" ]; then
    echo "compile: deno compile needs denort $version, and this machine cannot download it from dl.deno.land: set DENORT_BIN to a denort $version binary, or run on a machine that reaches dl.deno.land" >&2
  else
    echo "compile: deno compile failed (DENORT_BIN=${DENORT_BIN:-unset}): $(grep -m1 -iE 'error' "$log" || tail -n 1 "$log")" >&2
  fi
  exit 1
fi
echo "compiled ./shipshape ($(stat -c %s shipshape) bytes): run it with ./shipshape, check it with ./shipshape healthcheck"
