#!/usr/bin/env bash
# A crowd comes and leaves (issue 23): starts the server binary BIN (default
# target/release/stomp-edge) on a loopback port, prints its RSS right after start, lets
# `loadgen --idle N --subscribers 1` connect N idle subscribed clients (loadgen prints the RSS
# with them and per connection), then prints the RSS 1, 2, 3, 5 and 10 s after they left.
#
#     bash scripts/bench/crowd.sh [N=10000] [BIN]
#
# Needs an open-file limit above N (the client and the server each hold N sockets).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-10000}
bin=${2:-target/release/stomp-edge}
port=${CROWD_PORT:-18123}
config=$(mktemp --suffix=.toml)
printf '[limits]\nmax_connections = 20000\n' >"$config"
ulimit -n "$(ulimit -Hn)"
env -u STOMP_EDGE_BIN "$bin" --config "$config" --listen "127.0.0.1:$port" ${CROWD_SERVER_ARGS:-} 2>"${CROWD_SERVER_LOG:-/dev/null}" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$config"' EXIT
sleep 0.5
# RSS, and its anonymous part (the heap: what the allocator holds) and file part (the binary's
# and libc's code and data pages, shared and clean, which the kernel can drop at any time).
rss() {
    awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2}
        END {printf "%.2f MiB (anonymous %.2f, file %.2f)", r / 1024, a / 1024, f / 1024}' "/proc/$pid/status"
}
echo "RSS right after start: $(rss)"
cargo bench -q --bench loadgen -- --url "ws://127.0.0.1:$port/ws" --idle "$n" --subscribers 1 \
    --duration 1 --server-pid "$pid" 2>&1 | grep -E "server RSS +[0-9.]+ MiB before"
last=0
for t in 1 2 3 5 10; do
    sleep $((t - last))
    last=$t
    echo "RSS ${t} s after the crowd left: $(rss)"
done
if [ -n "${CROWD_SMAPS:-}" ]; then
    awk '/^[0-9a-f]+-/ {name = $6; range = $1} /^Rss:/ {if ($2 > 0 && name == "") print "  anonymous", range, $2, "KiB"}' \
        "/proc/$pid/smaps" | sort -k3 -rn | head -5
fi
