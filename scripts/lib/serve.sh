# Sourced by the conformance scripts: starts the release binary and waits
# for the address it listens on.
#   serve_release LOG [SERVER ARGS...]   sets $server (pid), $addr and $data
serve_release() {
    local log=$1
    shift
    mkdir -p "$(dirname "$log")"
    data=$(mktemp -d)
    RUST_LOG=warn,switchboard_server::server=info ./target/release/switchboard serve \
        --listen 127.0.0.1:0 --data-dir "$data" "$@" >"$log" 2>&1 &
    server=$!
    addr=""
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/.*listening on http:\/\///p' "$log" | head -1)
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    cat "$log"
    echo "$(basename "$0"): server did not start" >&2
    exit 2
}
