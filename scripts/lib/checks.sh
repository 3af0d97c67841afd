# shellcheck shell=bash
# Counted checks for the scripts/test.d steps: set TAG, source this, then `pass MSG`, `fail MSG`
# (counted; the step goes on), `fatal MSG` (counted, then exit 1), `check MSG CONDITION` (eval'd),
# `say MSG`, `now_ms`, and at the end `checks_done`, which prints the tally and returns non-zero
# when anything failed.

passed=0
failed=0
pass() { echo "[$TAG] PASS $*"; passed=$((passed + 1)); }
fail() { echo "[$TAG] FAIL $*"; failed=$((failed + 1)); }
fatal() { echo "[$TAG] FAIL $*"; echo "[$TAG] aborted: $passed checks passed, $((failed + 1)) failed"; exit 1; }
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }
say() { echo "[$TAG] $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
checks_done() {
    echo "[$TAG] $passed checks passed, $failed failed"
    [ "$failed" -eq 0 ]
}
