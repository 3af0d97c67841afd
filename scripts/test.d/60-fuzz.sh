#!/usr/bin/env bash
# A short, bounded fuzz run of every hand-written decoder: the STOMP parser (and the ERROR's
# receipt-id scan), the WebSocket codec, SockJS framing, and the config and Host/Origin readers
# (fuzz/fuzz_targets/*). Each target runs FUZZ_SECONDS (default 20) with libFuzzer on the
# stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its nightly flags), without a
# sanitizer: the crate has no unsafe code, so the run looks for panics, hangs and broken
# invariants, and builds in a fraction of an ASan build's time. A crash fails the step and
# leaves its input in fuzz/artifacts/<target>/. Installs cargo-fuzz when it is missing.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TAG=60-fuzz
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
say() { echo "[$TAG] $*"; }
fatal() { say "FAIL $*"; exit 1; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz || fatal "cargo install cargo-fuzz"
fi
export RUSTC_BOOTSTRAP=1
FLAGS=(-O -s none)
cd fuzz || exit 1
timeout 1200 cargo fuzz build "${FLAGS[@]}" || fatal "cargo fuzz build"

failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo fuzz list); do
    say "$target: ${SECONDS_PER_TARGET} s"
    # -rss_limit_mb bounds memory; -timeout flags any one input taking over 5 s as a hang.
    timeout $((SECONDS_PER_TARGET + 120)) cargo fuzz run "${FLAGS[@]}" "$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -timeout=5 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|thread .* panicked)' "$log" | sed "s/^/[$TAG] $target /"
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log"
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    fatal "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
fi
say "all targets ran clean"
