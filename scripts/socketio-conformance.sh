#!/usr/bin/env bash
# Runs the official Engine.IO and Socket.IO protocol test suites (from
# ../shared/tools/socketio-protocol) against a release build started with
# --socketio-conformance. Fails if any test fails.
# Usage: scripts/socketio-conformance.sh [engine.io|socket.io]...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
shared="${SWITCHBOARD_SHARED:-$root/../shared}"
log="$root/target/socketio-conformance-server.log"

cargo build --release --locked --bin switchboard
mkdir -p "$(dirname "$log")"
data=$(mktemp -d)
RUST_LOG=warn,switchboard_server::server=info ./target/release/switchboard serve \
    --listen 127.0.0.1:0 --socketio-conformance --data-dir "$data" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*listening on http:\/\///p' "$log" | head -1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "socketio-conformance.sh: server did not start" >&2; exit 2; }

status=0
bash "$shared/tools/socketio-protocol/run.sh" "http://$addr" "$@" || status=$?
kill -TERM $server
wait $server || { echo "socketio-conformance.sh: server did not exit cleanly" >&2; status=1; }
trap - EXIT
rm -rf "$data"
exit $status
