#!/usr/bin/env bash
# Instructions per delivery at full fan-out, counted by valgrind's callgrind (repeatable for the
# same binary and inputs, whatever else the machine does; CPU-time A/Bs on a loaded 2-core
# machine vary by +-7 %). For each BIN: starts it under callgrind on a loopback port, publishes
# 2000 messages to 100 subscribers (`loadgen --count 2000`, 200,000 deliveries), reads
# messages_delivered_total from /metrics, stops it, and prints total instructions (start-up
# included) per delivery.
#
#     bash scripts/bench/callgrind-ab.sh /tmp/before-stomp-edge target/release/stomp-edge
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo bench -q --bench loadgen --no-run 2>/dev/null
port=${CG_PORT:-18201}
for bin in "$@"; do
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.2; done
    cargo bench -q --bench loadgen -- --url "ws://127.0.0.1:$port/ws" --subscribers 100 --count 2000 \
        --duration 120 >/dev/null 2>&1
    d=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^stomp_edge_messages_delivered_total/ {print $2}')
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    rm -f "$out"
    echo "$bin: $d deliveries, $ir instructions, $(awk -v a="$ir" -v b="$d" 'BEGIN {printf "%.0f", a / b}') per delivery"
done
