#!/usr/bin/env bash
# The load generator's quick suite against the release server: builds `--release`, then runs
# `cargo bench --bench loadgen -- --quick` (1000 idle connections, ~2 s fan-out, latency and chat
# scenarios, loopback only) and prints its figures beside the targets; with `redis-server` on
# PATH also the cluster part (a Redis on a free loopback port and two nodes: cross-node
# fan-out, the Redis hop at 10k deliveries/s, Redis commands per chat message; ~2 s each),
# the Redis CPU per PUBLISH by boards subscribed (scripts/bench-redis-publish.sh, ~10 s), and
# scripts/bench/hostile.py --quick: the hostile-client scenarios of issue 13 (~2.5 min).
# Figures only: it exits non-zero when the build or the bench itself fails to run, never for a
# missed target.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TAG=90-bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
export CARGO_TERM_PROGRESS_WHEN=never

echo "[$TAG] cargo build --release"
if ! cargo build --release; then
    echo "[$TAG] FAIL release build"
    exit 1
fi
# The bench starts this binary (the test command's STOMP_EDGE_BIN is the debug one).
export STOMP_EDGE_BIN="$TARGET_DIR/release/stomp-edge"
echo "[$TAG] cargo bench --bench loadgen -- --quick (server: $STOMP_EDGE_BIN)"
if ! timeout 600 cargo bench --bench loadgen -- --quick; then
    echo "[$TAG] FAIL the load generator did not run to the end"
    exit 1
fi
# SockJS beside raw WebSocket (issue 7's figures), with the Node clients the test command installed.
if [ -d "$REPO_ROOT/tests/js/node_modules" ]; then
    echo "[$TAG] node tests/js/bench-sockjs.mjs (server: $STOMP_EDGE_BIN)"
    if ! timeout 120 node "$REPO_ROOT/tests/js/bench-sockjs.mjs"; then
        echo "[$TAG] FAIL the SockJS benchmark did not run to the end"
        exit 1
    fi
else
    echo "[$TAG] SockJS benchmark skipped: tests/js/node_modules missing (run scripts/test.sh)"
fi
# What one PUBLISH costs the Redis primary by boards subscribed (issue 12's Redis Cluster sizing).
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
    echo "[$TAG] bash scripts/bench-redis-publish.sh 50000"
    if ! timeout 120 bash scripts/bench-redis-publish.sh 50000; then
        echo "[$TAG] FAIL the Redis PUBLISH cost benchmark did not run to the end"
        exit 1
    fi
else
    echo "[$TAG] Redis PUBLISH cost skipped: redis-server or redis-benchmark missing"
fi
# Hostile clients (issue 13): each scenario against a fresh release server, peak and after RSS,
# a well-behaved client's p99 meanwhile, the overload scenario's loss and publisher rate.
echo "[$TAG] python3 scripts/bench/hostile.py --quick (server: $STOMP_EDGE_BIN)"
if ! timeout 300 python3 scripts/bench/hostile.py --quick; then
    echo "[$TAG] FAIL the hostile-client benchmark did not run to the end"
    exit 1
fi
echo "[$TAG] done (figures above; targets are printed, not enforced)"
