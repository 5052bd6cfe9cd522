#!/usr/bin/env bash
# Runs a server with its stdout read by a separate native reader (wc), as a container runtime reads a pod's
# log: the benchmark's own JavaScript never sits between the server and its pipe. Prints "pid N" at start,
# and "lines N" and "exit N" when the server has exited. Its own SIGTERM is passed on to the server.
# With READER_MATCH set (an awk regular expression), also "matched N": the lines that match it.
set -u
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/log"
if [ -n "${READER_MATCH:-}" ]; then
  awk -v re="$READER_MATCH" -v out="$dir" '$0 ~ re { m++ } END { print NR > (out "/lines"); print m + 0 > (out "/matched") }' \
    < "$dir/log" &
else
  wc -l < "$dir/log" > "$dir/lines" &
fi
reader=$!
"$@" > "$dir/log" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM
echo "pid $server"
while true; do
  wait "$server"
  code=$?
  kill -0 "$server" 2>/dev/null || break # a trapped signal also ends `wait`: wait again while it runs
done
wait "$reader"
echo "lines $(tr -d ' ' < "$dir/lines")"
[ -f "$dir/matched" ] && echo "matched $(cat "$dir/matched")"
echo "exit $code"
