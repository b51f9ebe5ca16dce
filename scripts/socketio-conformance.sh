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
source scripts/lib/serve.sh
serve_release "$log" --socketio-conformance
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$data"' EXIT

status=0
bash "$shared/tools/socketio-protocol/run.sh" "http://$addr" "$@" || status=$?
kill -TERM $server
wait $server || { echo "socketio-conformance.sh: server did not exit cleanly" >&2; status=1; }
trap - EXIT
rm -rf "$data"
exit $status
