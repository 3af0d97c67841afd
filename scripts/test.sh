#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, then runs every suite as
# a named, timed step (fmt, clippy, build, cargo test, Node interop, stomp.py interop, then each
# executable scripts/test.d/*.sh in sorted order). A failing step does not stop the others; the run
# ends with a summary table and one `N passed, N failed` line, and exits non-zero if any failed.
# Works without a TTY and with CI=true. Knobs (environment):
#   TEST_BUDGET_SECONDS  whole-run time limit (default 2280); each step also has its own limit
#   SKIP_SETUP=1         do not check or install anything first
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/steps.sh
. "$ROOT/scripts/lib/steps.sh"

export CARGO_TERM_PROGRESS_WHEN=never
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug/stomp-edge"
VENV="$ROOT/target/test-venv"

if [ "${SKIP_SETUP:-0}" != 1 ]; then
    run_step setup 1200 bash "$ROOT/scripts/lib/setup.sh"
fi

run_step "cargo fmt" 300 cargo fmt --all -- --check
run_step "cargo clippy" 1200 cargo clippy --all-targets -- -D warnings
run_step "cargo build" 1200 cargo build
run_step "cargo test" 1200 cargo test

# The client suites run the binary just built; after a failed build they would test a stale one.
if step_passed "cargo build" && [ -x "$BIN" ]; then
    run_step "node interop" 900 env -C "$ROOT/tests/js" STOMP_EDGE_BIN="$BIN" \
        node --test --test-reporter=spec --test-concurrency=1 --test-timeout=300000 \
        "$ROOT"/tests/js/*.test.mjs
    run_step "stomp.py interop" 300 env STOMP_EDGE_BIN="$BIN" \
        "$VENV/bin/python" "$ROOT/tests/py/run_tests.py"
else
    step_skip "node interop" "cargo build failed"
    step_skip "stomp.py interop" "cargo build failed"
fi

# Extra steps other teams drop in: every executable scripts/test.d/*.sh, in sorted order.
# They get REPO_ROOT, STOMP_EDGE_BIN and TEST_VENV, and 30 minutes at most each (within the budget).
shopt -s nullglob
export LC_COLLATE=C
for extra in "$ROOT"/scripts/test.d/*.sh; do
    if [ ! -x "$extra" ]; then
        printf '\n(skipping %s: not executable)\n' "${extra#"$ROOT"/}"
        continue
    fi
    run_step "$(basename "$extra" .sh)" 1800 env REPO_ROOT="$ROOT" STOMP_EDGE_BIN="$BIN" TEST_VENV="$VENV" "$extra"
done

steps_summary
