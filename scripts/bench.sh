#!/usr/bin/env bash
# The benchmark suite: builds release binaries, runs every scenario of
# switchboard-bench against switchboard (fresh data dir) and against the
# tokio-tungstenite baseline (bench/baseline) in the same run, the two
# servers in turn within each run, then writes target/bench/report.json
# (medians, switchboard/baseline ratios) and target/bench/report.svg. Each
# run also repeats the fixed-rate fan-out against switchboard with its data
# directory on tmpfs, with `--sync before-ack` and with `--commit-interval
# 10ms`. Flat-out fan-out runs with this tool's own client (1 publisher x
# 64 in flight) and with a second generator built on tokio-tungstenite
# (1 x 64 and 4 x 256, on 1 and 2 generator threads); idle memory is
# measured for WebSocket connections and for SSE streams. Socket.IO runs
# against switchboard and the servers its users would otherwise pick (a
# socketioxide server, bench/socketioxide, and the Node socket.io server,
# bench/socketio-node), each with the same event contract: fan-out over
# WebSocket at a fixed rate and flat out, over long-polling at a fixed rate,
# and idle memory. Across nodes: two switchboard nodes on one Redis
# (`--engine redis`, subscribers split between them, a publisher on each)
# beside the same load on one node with the embedded engine, and beside two
# Node socket.io servers on `@socket.io/redis-adapter`. Durable publish
# comes after all runs; last the `floor` scenario: the kernel's cost of one
# loopback write per delivery, with no server at all.
#
# Env: BENCH_RUNS (3)  BENCH_DURATION (10s)  BENCH_SUBSCRIBERS (1000)
#      BENCH_IDLE_CONNECTIONS (15000)  BENCH_THREADS (2, load tool workers)
#      BENCH_ONLY (all): a comma-separated choice of idle, native, sse,
#      socketio, cluster, variants (tmpfs, before-ack, commit interval),
#      history, floor
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${BENCH_RUNS:-3}"
duration="${BENCH_DURATION:-10s}"
subscribers="${BENCH_SUBSCRIBERS:-1000}"
idle="${BENCH_IDLE_CONNECTIONS:-15000}"
threads="${BENCH_THREADS:-2}"
out=target/bench
rm -rf "$out" && mkdir -p "$out"
# Server and load tool each hold up to ~15,000 sockets; 20,000 is this machine's cap.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p switchboard-server -p switchboard-bench -p switchboard-baseline \
    -p switchboard-socketioxide-peer
(cd bench/socketio-node && npm ci --no-audit --no-fund --loglevel=error)
if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# The Redis the cross-node scenarios share, on a free port, with the
# persistence Redis recommends (append-only file, fsynced every second).
redis_dir=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$redis_dir" --save '' \
    --appendonly yes --appendfsync everysec --daemonize no >"$out/redis.log" 2>&1 &
redis_pid=$!
redis_command() { # redis_command WORDS...: one inline command, its first line
    exec 3<>"/dev/tcp/127.0.0.1/$redis_port" && printf '%s\r\n' "$*" >&3 && head -1 <&3; exec 3>&-
}
for _ in $(seq 1 100); do
    [ "$(redis_command PING 2>/dev/null | tr -d '\r')" = "+PONG" ] && break
    sleep 0.1
done

pid=""
addr=""
data=""
start() { # start TARGET [DATA_ROOT [SERVER ARGS...]]: sets pid and addr
    local target=$1 log="$out/$1${node_suffix:-}.log"
    case "$target" in
        switchboard)
            data=$(mktemp -d -p "${2:-${TMPDIR:-/tmp}}")
            shift $(( $# < 2 ? $# : 2 ))
            ./target/release/switchboard serve --listen 127.0.0.1:0 --data-dir "$data" \
                --publish-rate 1000000 --publish-burst 1000000 "$@" >"$log" 2>&1 & ;;
        baseline)
            ./target/release/switchboard-baseline --listen 127.0.0.1:0 >"$log" 2>&1 & ;;
        socketioxide)
            ./target/release/socketioxide-peer --listen 127.0.0.1:0 >"$log" 2>&1 & ;;
        nodesocketio)
            node bench/socketio-node/server.js --listen 127.0.0.1:0 >"$log" 2>&1 & ;;
        switchboard-redis)
            ./target/release/switchboard serve --listen 127.0.0.1:0 --engine redis \
                --redis-url "redis://127.0.0.1:$redis_port/0" \
                --publish-rate 1000000 --publish-burst 1000000 >"$log" 2>&1 & ;;
        nodesocketio-redis)
            node bench/socketio-node/server.js --listen 127.0.0.1:0 \
                --redis "redis://127.0.0.1:$redis_port" >"$log" 2>&1 & ;;
    esac
    pid=$!
    addr=""
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$log" | head -1)
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    cat "$log" >&2
    echo "bench.sh: $target did not start" >&2
    exit 2
}
stop() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -z "$data" ] || rm -rf "$data"
    data=""
}
# Two nodes of TARGET: the first's pid and addr in pid and addr, the
# second's in pid2 and addr2.
pid2=""
addr2=""
start_pair() {
    node_suffix=-2 start "$1"
    pid2=$pid addr2=$addr
    node_suffix= start "$1"
}
stop_pair() {
    stop
    kill -TERM "$pid2" 2>/dev/null || true
    wait "$pid2" 2>/dev/null || true
    pid2=""
    redis_command FLUSHALL >/dev/null
}
stop_all() {
    stop
    [ -z "$pid2" ] || kill -TERM "$pid2" 2>/dev/null || true
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$redis_dir"
}
trap stop_all EXIT
bench() { # bench TARGET NAME RUN ARGS...
    local target=$1 name=$2 run=$3
    shift 3
    echo "bench.sh: $target $name run $run" >&2
    local result="$out/$target-$name-$run.json"
    if ! ./target/release/switchboard-bench --server "$addr" --server-pid "$pid" \
        --threads "${BENCH_GEN_THREADS:-$threads}" --json "$@" >"$result"; then
        # A peer that fails a scenario is reported without it; switchboard may not.
        case "$target" in switchboard | switchboard-redis) exit 1 ;; esac
        echo "bench.sh: $target failed $name run $run" >&2
        rm -f "$result"
    fi
}

wants() { [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }

# Run by run, each target in turn on a fresh process and data directory, so
# that the ratios compare runs minutes apart, not a whole suite apart, on
# this noisy machine.
for run in $(seq 1 "$runs"); do
    if wants idle; then
        # Idle memory on a fresh process, before anything else ran in it.
        for target in switchboard baseline; do
            start "$target"
            bench "$target" idle "$run" idle --connections "$idle"
            stop
        done
        # The same for event streams (GET /sse); the baseline has no SSE.
        start switchboard
        bench switchboard idle-sse "$run" idle --transport sse --connections "$idle"
        stop
        # With connection tokens (--auth token): what a grant and its place
        # in the expiry schedule add to an idle connection.
        start switchboard "" --auth token --token-hmac-secret bench-secret
        bench switchboard idle-token "$run" idle --token-secret bench-secret --connections "$idle"
        stop
    fi
    if wants native; then
        for target in switchboard baseline; do
            start "$target"
            bench "$target" fanout-rate "$run" fanout --subscribers "$subscribers" --rate 200 --duration "$duration"
            bench "$target" fanout-flat "$run" fanout --subscribers "$subscribers" --rate 0 --in-flight 64 --duration "$duration"
            bench "$target" echo "$run" echo --connections 100 --in-flight 1 --duration "$duration"
            # Flat out again with a second generator (tokio-tungstenite and
            # serde_json, as an application would use them): 1 publisher x 64
            # in flight and 4 x 256, each on 1 and 2 generator threads.
            for setup in 1x64 4x256; do
                for generator_threads in 1 2; do
                    BENCH_GEN_THREADS=$generator_threads bench "$target" \
                        "fanout-flat-$setup-t$generator_threads" "$run" fanout --client tungstenite \
                        --subscribers "$subscribers" --publishers "${setup%x*}" \
                        --in-flight "${setup#*x}" --rate 0 --duration "$duration"
                done
            done
            stop
        done
    fi
    if wants sse; then
        # The same fan-out to SSE subscribers (GET /sse); the baseline has no SSE.
        start switchboard
        bench switchboard fanout-sse-rate "$run" fanout --transport sse --subscribers "$subscribers" --rate 200 --duration "$duration"
        bench switchboard fanout-sse-flat "$run" fanout --transport sse --subscribers "$subscribers" --rate 0 --in-flight 64 --duration "$duration"
        stop
    fi
    if wants socketio; then
        # Socket.IO (Engine.IO 4): switchboard beside socketioxide and Node's
        # socket.io, each on a fresh process.
        for target in switchboard socketioxide nodesocketio; do
            start "$target"
            bench "$target" socketio-idle "$run" idle --transport socketio --connections "$idle"
            stop
            start "$target"
            bench "$target" socketio-rate "$run" fanout --transport socketio --subscribers "$subscribers" --rate 200 --duration "$duration"
            bench "$target" socketio-flat "$run" fanout --transport socketio --subscribers "$subscribers" --rate 0 --in-flight 64 --duration "$duration"
            bench "$target" socketio-polling-rate "$run" fanout --transport socketio-polling --subscribers "$subscribers" --rate 200 --duration "$duration"
            stop
        done
    fi
    if wants cluster; then
        # Across nodes: 1,000 subscribers split between two nodes on one Redis,
        # a publisher on each; the same load on one node (embedded engine); and
        # two Node socket.io servers on Redis, over Socket.IO.
        cross=(--subscribers "$subscribers" --publishers 2 --duration "$duration")
        start switchboard
        bench switchboard cluster-rate "$run" fanout "${cross[@]}" --rate 200
        bench switchboard cluster-flat "$run" fanout "${cross[@]}" --rate 0 --in-flight 64
        stop
        start_pair switchboard-redis
        pair=(--node "$addr2" --node-pid "$pid2" --redis "127.0.0.1:$redis_port")
        bench switchboard-redis cluster-rate "$run" fanout "${cross[@]}" "${pair[@]}" --rate 200
        bench switchboard-redis cluster-flat "$run" fanout "${cross[@]}" "${pair[@]}" --rate 0 --in-flight 64
        bench switchboard-redis cluster-socketio-rate "$run" fanout --transport socketio "${cross[@]}" "${pair[@]}" --rate 200
        bench switchboard-redis cluster-socketio-flat "$run" fanout --transport socketio "${cross[@]}" "${pair[@]}" --rate 0 --in-flight 64
        stop_pair
        start_pair nodesocketio-redis
        pair=(--node "$addr2" --node-pid "$pid2" --redis "127.0.0.1:$redis_port")
        bench nodesocketio-redis cluster-socketio-rate "$run" fanout --transport socketio "${cross[@]}" "${pair[@]}" --rate 200
        bench nodesocketio-redis cluster-socketio-flat "$run" fanout --transport socketio "${cross[@]}" "${pair[@]}" --rate 0 --in-flight 64
        stop_pair
    fi
    if wants variants; then
        # Fixed rate again with the data directory on tmpfs, where fsync costs
        # nothing: how much of the latency is the disk (the baseline stores
        # nothing).
        if [ -d /dev/shm ] && [ -w /dev/shm ]; then
            start switchboard /dev/shm
            bench switchboard fanout-rate-tmpfs "$run" fanout --subscribers "$subscribers" --rate 200 --duration "$duration"
            stop
        fi
        # And on disk with `--sync before-ack`: delivered once written, acked once fsynced.
        start switchboard "${TMPDIR:-/tmp}" --sync before-ack
        bench switchboard fanout-rate-before-ack "$run" fanout --subscribers "$subscribers" --rate 200 --duration "$duration"
        stop
        # And with `--commit-interval 10ms`: at 200 msgs/s two messages share a
        # commit and each subscriber's send, trading latency for CPU.
        start switchboard "${TMPDIR:-/tmp}" --commit-interval 10ms
        bench switchboard fanout-rate-commit-interval "$run" fanout --subscribers "$subscribers" --rate 200 --duration "$duration"
        stop
    fi
done

# Durable publish last: it writes millions of messages, and the disk's
# writeback of them would slow the fsyncs of anything measured after it.
for run in $(seq 1 "$runs"); do
    wants history || break
    start switchboard
    bench switchboard history "$run" history --duration "$duration"
    stop
done
stop_all
trap - EXIT

# No server: what one loopback write per delivery costs on this machine,
# the floor under both targets' CPU per delivery at a fixed rate.
for run in $(seq 1 "$runs"); do
    wants floor || break
    echo "bench.sh: floor run $run" >&2
    ./target/release/switchboard-bench --json floor --connections "$subscribers" --rate 200 \
        --duration "$duration" >"$out/floor-fanout-rate-$run.json"
done

./target/release/switchboard-bench report "$out"
