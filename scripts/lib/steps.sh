# shellcheck shell=bash
# Named, timed, bounded test steps for scripts/test.sh: each step runs under `timeout` within
# what is left of the whole run's time budget, its result is recorded, and a failing step does not
# stop the next one. `steps_summary` prints the table and the closing `N passed, N failed` line.

STEP_NAMES=()
STEP_RESULTS=()
STEP_SECONDS=()
STEP_NOTES=()
STEP_LOGS=()
STEPS_STARTED_AT=$SECONDS
STEP_PID=""
# Each step's output is also kept here, so the summary can repeat why a step failed: the end of a
# CI log is often all a reader gets to see.
STEPS_LOG_DIR=$(mktemp -d)
trap 'rm -rf "$STEPS_LOG_DIR"' EXIT
_steps_interrupted() {
    [ -n "$STEP_PID" ] && kill -TERM "$STEP_PID" 2>/dev/null && wait "$STEP_PID" 2>/dev/null
    printf '\ninterrupted\n' >&2
    exit 130
}
trap _steps_interrupted INT TERM
: "${TEST_BUDGET_SECONDS:=2280}" # whole run, setup included: CI must end within 40 min on 2 cores

_step_record() { # name result seconds note [log]
    STEP_LOGS+=("${5:-}")
    STEP_NAMES+=("$1")
    STEP_RESULTS+=("$2")
    STEP_SECONDS+=("$3")
    STEP_NOTES+=("$4")
}

# step_skip NAME REASON: records a failed step that could not run.
step_skip() {
    printf '\n==> [%d] %s\n<== %s: FAIL (not run: %s)\n' "$((${#STEP_NAMES[@]} + 1))" "$1" "$1" "$2"
    _step_record "$1" FAIL 0 "not run: $2"
}

# run_step NAME LIMIT_SECONDS COMMAND [ARGS...]: runs the command (not a shell function) bounded
# by LIMIT_SECONDS and by the time left in the budget; returns 0 even when the step fails.
run_step() {
    local name=$1 limit=$2
    shift 2
    local left=$((TEST_BUDGET_SECONDS - (SECONDS - STEPS_STARTED_AT)))
    if [ "$left" -le 5 ]; then
        step_skip "$name" "time budget of ${TEST_BUDGET_SECONDS}s used up"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    printf '\n==> [%d] %s  (limit %ss): %s\n' "$((${#STEP_NAMES[@]} + 1))" "$name" "$limit" "$*"
    local t0 rc=0 secs note="" log
    log="$STEPS_LOG_DIR/$((${#STEP_NAMES[@]} + 1)).log"
    : >"$log"
    t0=$(date +%s%N)
    # timeout puts the command in its own process group and signals the whole group, so servers a
    # test spawned do not outlive it. That group gets no Ctrl-C from the terminal: the trap below
    # passes INT/TERM on to the running step.
    # Its output (stdout and stderr, in order) goes to its log, which `tail` shows as it grows and
    # finishes showing once the step has ended.
    timeout --kill-after=10 "$limit" "$@" </dev/null >"$log" 2>&1 &
    STEP_PID=$!
    tail -n +1 -s 0.2 -f --pid="$STEP_PID" "$log" &
    local shown=$!
    wait "$STEP_PID" || rc=$?
    STEP_PID=""
    wait "$shown"
    secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    if [ "$rc" -eq 0 ]; then
        _step_record "$name" PASS "$secs" ""
        printf '<== %s: PASS in %ss\n' "$name" "$secs"
    else
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note="timed out after ${limit}s"; else note="exit $rc"; fi
        _step_record "$name" FAIL "$secs" "$note" "$log"
        printf '<== %s: FAIL (%s) in %ss\n' "$name" "$note" "$secs"
    fi
    return 0
}

# step_passed NAME: true if a step of that name ran and passed.
step_passed() {
    local i
    for i in "${!STEP_NAMES[@]}"; do
        [ "${STEP_NAMES[$i]}" = "$1" ] && [ "${STEP_RESULTS[$i]}" = PASS ] && return 0
    done
    return 1
}

# steps_summary: prints the table, then exactly one closing line `N passed, N failed`;
# returns non-zero if any step failed.
steps_summary() {
    local i passed=0 failed=0 width=4
    for i in "${!STEP_NAMES[@]}"; do
        [ "${#STEP_NAMES[$i]}" -gt "$width" ] && width=${#STEP_NAMES[$i]}
    done
    for i in "${!STEP_NAMES[@]}"; do
        if [ "${STEP_RESULTS[$i]}" = PASS ] || [ ! -s "${STEP_LOGS[$i]:-}" ]; then continue; fi
        # What the step itself said about its failure: its FAIL/failed/panicked/error lines and a
        # checker's "  - reason" lines, the last 30 of them.
        printf '\n--- why %s failed (its lines that say so, last 30) ---\n' "${STEP_NAMES[$i]}"
        grep -aE 'FAIL|[Ff]ailed|panicked|^error|^Error|  - ' "${STEP_LOGS[$i]}" | tail -n 30 | cut -c1-400
    done
    printf '\n%-*s  %-6s  %8s  %s\n' "$width" step result seconds note
    printf '%-*s  %-6s  %8s  %s\n' "$width" "$(printf '%*s' "$width" '' | tr ' ' -)" ------ -------- ----
    for i in "${!STEP_NAMES[@]}"; do
        printf '%-*s  %-6s  %8s  %s\n' "$width" "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_SECONDS[$i]}" "${STEP_NOTES[$i]}"
        if [ "${STEP_RESULTS[$i]}" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    done
    printf 'total %ss\n' "$((SECONDS - STEPS_STARTED_AT))"
    printf '%d passed, %d failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ]
}
