#!/usr/bin/env bash
# The soak: clients on every transport joining, leaving, dropping and
# resuming while publishers publish on every transport, for DURATION
# (10m by default; CI runs 30s), against the release binary. Fails unless
# every subscriber's view was gap-free, every acknowledged message is in
# history, no file descriptor leaked, and memory came back within 10 %.
# Usage: scripts/soak.sh [DURATION]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
duration="${1:-10m}"

cargo build --release --locked -p switchboard-server -p switchboard-bench
source scripts/lib/serve.sh
# The history fill publishes flat out; a short recovery window lets ended
# Socket.IO sessions go before memory is read back.
serve_release target/soak-server.log \
    --publish-rate 1000000 --publish-burst 1000000 \
    --history-max-count 1000000 --recovery-window 2s
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$data"' EXIT

status=0
./target/release/switchboard-bench --server "$addr" --server-pid "$server" \
    soak --duration "$duration" || status=$?
kill -TERM $server
wait $server || { echo "soak.sh: server did not exit cleanly" >&2; status=1; }
trap - EXIT
rm -rf "$data"
exit $status
