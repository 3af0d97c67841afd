#!/usr/bin/env bash
# What one chat message costs the Redis primary, and so when one primary stops being enough.
# A chat message is one PUBLISH of its envelope (about 400 bytes) to the boards that have
# members in the room (one pub/sub connection each). This starts a private redis-server on a
# free loopback port, subscribes B connections (B = boards) to one channel, sends PUBLISHes with
# redis-benchmark, and prints the primary's own CPU per message (INFO cpu, main thread) and the
# messages per second one primary core can take at that cost; once for a plain PUBLISH and once
# for a streamed destination's append script (what a chat message costs since history landed).
#   bash scripts/bench-redis-publish.sh [MESSAGES]     (default 100000 per row)
set -euo pipefail

N="${1:-100000}"
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "bench-redis-publish: $tool is missing (bash scripts/lib/setup.sh)"; exit 1; }
done
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
DIR="$(mktemp -d)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >/dev/null &
PIDS+=("$!")
for _ in $(seq 100); do redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.05; done

cli() { redis-cli -p "$PORT" "$@"; }
# Main-thread CPU seconds of the server (user + sys).
cpu() { cli INFO cpu | tr -d '\r' | awk -F: '/used_cpu_(user|sys)_main_thread/ { s += $2 } END { printf "%.6f", s }'; }
# An envelope-sized payload: what relay.rs PUBLISHes for one chat message.
PAYLOAD="$(python3 -c 'print("x" * 400)')"
CHANNEL="stomp:broadcast:room:bench"

# A streamed destination (every /topic/room/**) appends with the relay's own script
# (src/engine/redis/stream.rs APPEND_LUA: the applied check, HINCRBY, XADD MAXLEN, 2 x PEXPIRE,
# SET of the applied sequence number, PUBLISH) instead. Each call names a fresh applied key
# (__rand_int__), so none is taken for a retry and every one appends.
SCRIPT="$(sed -n '/^pub const APPEND_LUA: &str = r#"$/,/^"#;$/p' "$(dirname "$0")/../src/engine/redis/stream.rs" | sed '1d;$d')"
SHA=""
[ -n "$SCRIPT" ] && SHA="$(cli SCRIPT LOAD "$SCRIPT" | tr -d '\r')"
ENVELOPE="{\"x\":\"$PAYLOAD\"}"

printf '%-10s %-8s %-22s %-26s %s\n' kind boards "Redis CPU per message" "messages/s at 1 core" "redis-benchmark rate (client-bound)"
for kind in publish stream; do
[ "$kind" = stream ] && [ -z "$SHA" ] && { echo "stream: APPEND_LUA not found, skipped"; continue; }
subscribed=0
for boards in 0 1 2 4 8 16; do
    while [ "$subscribed" -lt "$boards" ]; do
        redis-cli -p "$PORT" SUBSCRIBE "$CHANNEL" >/dev/null &
        PIDS+=("$!")
        subscribed=$((subscribed + 1))
    done
    for _ in $(seq 100); do
        [ "$(cli PUBSUB NUMSUB "$CHANNEL" | tail -1)" = "$boards" ] && break
        sleep 0.05
    done
    if [ "$kind" = publish ]; then
        command=(PUBLISH "$CHANNEL" "$PAYLOAD")
    else
        command=(EVALSHA "$SHA" 3 stomp:stream:data:room:bench stomp:stream:meta:room:bench
            "stomp:relay:applied:bench:__rand_int__" "$CHANNEL" "$ENVELOPE" 1000 3600000 1 "" 0 60000 0)
    fi
    before="$(cpu)"
    rate="$(redis-benchmark -p "$PORT" -n "$N" -c 4 -P 16 -r 1000000000 -q "${command[@]}" | tr '\r' '\n' |
        awk '/requests per second/ { for (i = 2; i <= NF; i++) if ($i == "requests") r = $(i - 1) } END { print r }')"
    after="$(cpu)"
    python3 - "$kind" "$boards" "$before" "$after" "$N" "$rate" <<'PY'
import sys
kind, boards, before, after, n, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
us = (after - before) / n * 1e6
print(f"{kind:<10} {boards:<8} {us:>6.2f} us{'':<13} {1e6 / us if us > 0 else 0:>10,.0f}{'':<16} {rate}/s")
PY
done
if [ "$kind" = stream ] && [ "$(cli XLEN stomp:stream:data:room:bench)" = 0 ]; then
    echo "stream: the append script wrote nothing (figures above are not valid)"
fi
# The next kind starts with no subscribers again.
for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done
PIDS=("${PIDS[0]}")
for _ in $(seq 100); do [ "$(cli PUBSUB NUMSUB "$CHANNEL" | tail -1)" = 0 ] && break; sleep 0.05; done
done
