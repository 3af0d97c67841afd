#!/usr/bin/env bash
# A/B of server CPU per delivery (issue 23): for ROUNDS rounds, runs each NAME=BIN[:ENV=VAL]
# in turn (interleaved, so machine load hits all alike) on a loopback port with
# `loadgen --subscribers 100` at full speed for 3 s (server CPU / deliveries) and at
# `--rate 100` (10 k deliveries/s, its p99), then prints the median of each.
#
#     bash scripts/bench/fanout-ab.sh 5 main=/tmp/main-stomp-edge new=target/release/stomp-edge
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=$1
shift
port=${AB_PORT:-18130}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -q --bench loadgen --no-run 2>/dev/null
one() { # name bin [env]
    local name=$1 bin=$2 envs=${3:-}
    env -u STOMP_EDGE_BIN $envs "$bin" --listen "127.0.0.1:$port" 2>/dev/null &
    local pid=$!
    sleep 0.4
    local full rate
    full=$(cargo bench -q --bench loadgen -- --url "ws://127.0.0.1:$port/ws" --subscribers 100 --duration 3 --server-pid "$pid" 2>&1)
    rate=$(cargo bench -q --bench loadgen -- --url "ws://127.0.0.1:$port/ws" --subscribers 100 --rate 100 --duration 3 --server-pid "$pid" 2>&1)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local d c p99
    d=$(echo "$full" | awk '/^ *deliveries/ {print $2; exit}')
    c=$(echo "$full" | awk '/server CPU/ {print $3; exit}')
    p99=$(echo "$rate" | sed -n 's/.*latency.*p99 \([0-9.]*\) ms.*/\1/p' | head -n 1)
    echo "$name $(awk -v c="$c" -v d="$d" 'BEGIN {printf "%.0f", c * 1e9 / d}') $p99" | tee -a "$out"
}
for _ in $(seq "$rounds"); do
    for arg in "$@"; do
        name=${arg%%=*}
        rest=${arg#*=}
        bin=${rest%%:*}
        envs=
        [ "$rest" != "$bin" ] && envs=${rest#*:}
        one "$name" "$bin" "$envs"
    done
done
echo "median of $rounds: name, ns of server CPU per delivery (100 subscribers, full speed), p99 ms at 10 k deliveries/s"
for arg in "$@"; do
    name=${arg%%=*}
    ns=$(awk -v n="$name" '$1 == n {print $2}' "$out" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    p99=$(awk -v n="$name" '$1 == n {print $3}' "$out" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    echo "$name $ns ns $p99 ms"
done
