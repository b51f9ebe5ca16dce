#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (all cases 1.* to 13.*) against
# a release build's /echo endpoint. Fails if any case fails or is skipped.
# Usage: scripts/autobahn.sh [OUTDIR]   (env AUTOBAHN_EXCLUDE / AUTOBAHN_CASES pass through)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
shared="${SWITCHBOARD_SHARED:-$root/../shared}"
outdir="${1:-$root/target/autobahn}"
log="$root/target/autobahn-server.log"

bash "$shared/tools/autobahn/install.sh"
cargo build --release --locked --bin switchboard

# Autobahn's 9.* cases send messages of up to 16 MiB.
source scripts/lib/serve.sh
serve_release "$log" --max-message-size 16777216
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$data"' EXIT

status=0
AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-1500}" bash "$shared/tools/autobahn/run.sh" "ws://$addr/echo" "$outdir" | tee "$outdir.summary" || status=$?
summary=$(tail -n 1 "$outdir.summary")
kill -TERM $server
wait $server || { echo "autobahn.sh: server did not exit cleanly" >&2; status=1; }
trap - EXIT
rm -rf "$data"
case "$summary" in
    *" 0 failed, 0 skipped") ;;
    *) echo "autobahn.sh: not clean: $summary" >&2; [ "$status" != 0 ] || status=1 ;;
esac
exit "$status"
