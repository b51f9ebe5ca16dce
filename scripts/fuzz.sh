#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a bounded time each, with
# AddressSanitizer (on the stable toolchain, which RUSTC_BOOTSTRAP lets
# take -Zsanitizer). A crash stops the run; its input is left in
# fuzz/artifacts/TARGET/ (make it a unit test). Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
targets=$(cargo fuzz list)
cargo fuzz build -O
for target in $targets; do
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s"
  log="target/fuzz-$target.log"
  status=0
  cargo fuzz run -O "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -60 "$log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/ (make it a unit test)" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s with no crash"
