# shellcheck shell=bash
# Shared by the board-build steps (50-aarch64, 55-armv6): run a board binary under qemu-user as
# systemd would and check it. Source it after scripts/lib/checks.sh (pass, fail, fatal, say); it
# makes the scratch directory `$work` and sets the EXIT trap that stops what it started and
# removes `$work`. Then `board_run QEMU_COMMAND...` (the binary last, e.g.
# `board_run qemu-arm-static -cpu arm1176 target/.../stomp-edge`); `board_static_layout_check`
# inspects the binary before.
#
# It starts a datagram socket standing in for systemd's NOTIFY_SOCKET, starts the server on a free
# loopback port with WATCHDOG_USEC=2 s, then checks /healthz, a STOMP round trip
# (tests/js/qemu-smoke.mjs), READY=1 and WATCHDOG=1, and SIGTERM: exit status 0 and STOPPING=1.
# Sets BOARD_IDLE_RSS_KIB (the emulator process's VmRSS once idle after start, qemu's own memory
# included), BOARD_IMAGE_RSS_KIB (of that, the pages of the board binary's file: qemu maps the
# guest binary from its file as the kernel would, and the same pages around each one touched are
# resident, so this is the binary's share of a board's idle RSS) and BOARD_READY_MS. Extra environment for the server: BOARD_ENV=(NAME=VALUE...).
# Every wait is bounded.

board_server_pid=
board_listener_pid=
BOARD_ENV=()
work=$(mktemp -d)

board_run_cleanup() {
    [ -z "$board_server_pid" ] || kill -KILL "$board_server_pid" 2>/dev/null
    [ -z "$board_listener_pid" ] || kill "$board_listener_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap board_run_cleanup EXIT
trap 'exit 130' INT TERM

# board_static_layout_check BIN TRIPLE: the board binary is static (no dynamic loader asked for)
# and was linked with its code layout, cross/layout/TRIPLE.ld (scripts/lib/cross.sh), whose
# section's size it prints.
board_static_layout_check() {
    if readelf -l "$1" | grep -q INTERP; then fail "$1 asks for a dynamic loader"; else pass "static: no dynamic loader"; fi
    # The section's size, hex, from `[Nr] Name Type Address Off Size ...`.
    local hex
    hex=$(readelf -SW "$1" | grep ' \.text\.startup_path ' | sed 's/^.*\] *//' | awk '{ print $5 }')
    if [ -n "$hex" ]; then
        pass "code layout applied: .text.startup_path, $((16#$hex / 1024)) KiB first in the text"
    else
        fail "no .text.startup_path section: cross/layout/$2.ld was not applied"
    fi
}

board_run() {
    BOARD_IDLE_RSS_KIB=
    BOARD_IMAGE_RSS_KIB=
    BOARD_READY_MS=
    rm -f "$work/notify.sock" "$work/notify.log"
    # Each notify message is logged with the wall-clock time it arrived.
    python3 - "$work/notify.sock" "$work/notify.log" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.5)
end = time.time() + 600
with open(sys.argv[2], "a", buffering=1) as log:
    while time.time() < end:
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        # sd_notify ends each state with a newline (systemd reads newline-separated lines).
        text = data.decode(errors="replace").rstrip("\n")
        log.write("%.6f %s\n" % (time.time(), text.replace("\n", "\\n")))
EOF
    board_listener_pid=$!
    local _
    for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
    [ -S "$work/notify.sock" ] || fatal "notify listener did not start"
    touch "$work/notify.log"

    local start_s
    start_s=$(date +%s.%N)
    # The server refuses unknown STOMP_EDGE_* variables, and the test runner sets STOMP_EDGE_BIN.
    env -u STOMP_EDGE_BIN "${BOARD_ENV[@]}" NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=2000000 \
        "$@" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
    board_server_pid=$!

    local port=
    for _ in $(seq 600); do # 60 s
        port=$(grep -aoE 'listening on 127\.0\.0\.1:[0-9]+' "$work/server.err" | head -n 1 | sed 's/.*://')
        [ -n "$port" ] && break
        kill -0 "$board_server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        sed 's/^/    server: /' "$work/server.err" | tail -n 20
        fatal "no 'listening on 127.0.0.1:PORT' line on stderr within 60 s"
    fi
    pass "server under qemu listening on 127.0.0.1:$port"

    local health
    health=$(python3 - "$port" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen("http://127.0.0.1:%s/healthz" % sys.argv[1], timeout=10) as r:
        body = r.read().decode()
        ok = r.status == 200 and "json" in r.headers.get("content-type", "") and json.loads(body).get("status") == "ok"
        print(("OK " if ok else "BAD ") + str(r.status) + " " + body)
except Exception as e:
    print("BAD", e)
EOF
)
    case $health in
        OK*) pass "GET /healthz: ${health#OK }" ;;
        *) fail "GET /healthz: ${health#BAD }" ;;
    esac

    # Idle: listening, one health check answered, nobody connected.
    sleep 1
    BOARD_IDLE_RSS_KIB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$board_server_pid/status" 2>/dev/null)
    BOARD_IMAGE_RSS_KIB=$(awk -v bin="$(realpath "${!#}")" '
        /^[0-9a-f]+-[0-9a-f]+ / { mine = ($6 == bin) }
        mine && /^Rss:/ { kib += $2 }
        END { print kib + 0 }' "/proc/$board_server_pid/smaps" 2>/dev/null)
    say "idle RSS under qemu (emulator included): ${BOARD_IDLE_RSS_KIB:-?} KiB, of it the binary's file: ${BOARD_IMAGE_RSS_KIB:-?} KiB of $(($(stat -c %s "${!#}") / 1024)) KiB"

    if timeout 60 node tests/js/qemu-smoke.mjs "ws://127.0.0.1:$port/ws" 45000; then
        pass "STOMP connect, subscribe /topic/qemu, send and receive"
    else
        fail "STOMP round trip (tests/js/qemu-smoke.mjs)"
    fi

    # READY once the listener is up; WATCHDOG once a second (WATCHDOG_USEC is 2 s).
    for _ in $(seq 50); do grep -q ' WATCHDOG=1$' "$work/notify.log" && break; sleep 0.1; done
    local ready_line
    ready_line=$(grep -m1 ' READY=1' "$work/notify.log")
    if [ -n "$ready_line" ]; then
        BOARD_READY_MS=$(awk -v a="${ready_line%% *}" -v b="$start_s" 'BEGIN{printf "%d", (a-b)*1000}')
        pass "READY=1 received ($BOARD_READY_MS ms after start, under qemu)"
    else
        fail "no READY=1 on NOTIFY_SOCKET"
    fi
    if grep -q ' WATCHDOG=1$' "$work/notify.log"; then
        pass "WATCHDOG=1 received ($(grep -c ' WATCHDOG=1$' "$work/notify.log") so far)"
    else
        fail "no WATCHDOG=1 on NOTIFY_SOCKET within 5 s (WATCHDOG_USEC=2000000)"
    fi

    # SIGTERM: drain, STOPPING=1, exit 0 within the deadline (+ margin for qemu).
    kill -TERM "$board_server_pid"
    for _ in $(seq 300); do kill -0 "$board_server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$board_server_pid" 2>/dev/null; then
        fail "server still running 30 s after SIGTERM"
    else
        wait "$board_server_pid"
        local status=$?
        if [ "$status" -eq 0 ]; then pass "exit status 0 after SIGTERM"; else fail "exit status $status after SIGTERM"; fi
    fi
    board_server_pid=
    if grep -q ' STOPPING=1' "$work/notify.log"; then pass "STOPPING=1 received"; else fail "no STOPPING=1 after SIGTERM"; fi
    awk '!seen[$2]++ { print "    notify: " $2 }' "$work/notify.log"
    kill "$board_listener_pid" 2>/dev/null
    wait "$board_listener_pid" 2>/dev/null
    board_listener_pid=
}
