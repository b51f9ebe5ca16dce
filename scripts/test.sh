#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs it:
# every crate's tests (cargo), then the browser tests (headless Chromium).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian's Chromium for the end-to-end tests (playwright-core drives it),
# strace, which shows the durability test each fsync before its ack,
# redis-server, which the Redis engine's tests start on free ports, and
# openssl, which makes the certificates of its TLS test.
if ! command -v chromium >/dev/null || ! command -v strace >/dev/null \
  || ! command -v redis-server >/dev/null || ! command -v openssl >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    chromium strace redis-server openssl >/dev/null
fi
# The browser driver (playwright-core), an independent WebSocket client (ws)
# and the official Socket.IO clients 4 and 2 (socket.io-client).
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
# Python's Socket.IO client (python-socketio), pinned, in a venv of its own.
if [ ! -x target/py-venv/bin/python ] || ! target/py-venv/bin/python -c 'import socketio' 2>/dev/null; then
  if ! python3 -m venv target/py-venv 2>/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/py-venv
  fi
  target/py-venv/bin/pip install -q --disable-pip-version-check -r e2e/python/requirements.txt
fi

cargo test --workspace --locked "$@"
# The integration tests again on the Redis engine: every test server gets a
# redis-server of its own (tests that start the binary keep the embedded one).
SWITCHBOARD_TEST_ENGINE=redis cargo test --locked -p switchboard-server --test it "$@"

# The browser tests' binary has the store's crash points compiled in
# (inert unless FAILPOINTS arms one): e2e/resend.test.mjs kills the server
# mid-publish with them.
cargo build --locked -p switchboard-server --features failpoints --bin switchboard
e2e_start=$(date +%s)
(cd e2e && node --test --test-concurrency=1)
echo "e2e: browser tests took $(( $(date +%s) - e2e_start ))s"
