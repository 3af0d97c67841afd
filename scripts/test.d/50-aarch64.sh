#!/usr/bin/env bash
# The board build, tested under emulation: build the aarch64 release binary with Debian's cross
# gcc, print its size, run it under qemu-aarch64 as systemd would (NOTIFY_SOCKET, WATCHDOG_USEC),
# check /healthz and a STOMP round trip, READY/WATCHDOG/STOPPING and a clean SIGTERM exit, then
# `systemd-analyze verify` the unit and the install/uninstall scripts into a temporary root.
# Installs what it needs when missing. Exits non-zero on any failure; every wait is bounded.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TARGET=aarch64-unknown-linux-gnu
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/stomp-edge
SYSROOT=/usr/aarch64-linux-gnu
SIZE_BUDGET=${STOMP_EDGE_SIZE_BUDGET_BYTES:-3145728} # 3 MiB, the issue's target
TAG=50-aarch64

work=$(mktemp -d)
server_pid=
listener_pid=
cleanup() {
    [ -z "$server_pid" ] || kill -KILL "$server_pid" 2>/dev/null
    [ -z "$listener_pid" ] || kill "$listener_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
pass() { echo "[$TAG] PASS $*"; passed=$((passed + 1)); }
fail() { echo "[$TAG] FAIL $*"; failed=$((failed + 1)); }
fatal() { echo "[$TAG] FAIL $*"; echo "[$TAG] aborted: $passed checks passed, $((failed + 1)) failed"; exit 1; }
say() { echo "[$TAG] $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- toolchain: install only what is missing -----------------------------------------------
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1 || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
# shellcheck source=../lib/cross.sh
. scripts/lib/cross.sh
apt_install_missing "${need[@]}" || fatal "apt-get install ${need[*]}"
rust_target "$TARGET" || fatal "rustup target add $TARGET"
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
if [ ! -d tests/js/node_modules/@stomp/stompjs ] || [ ! -d tests/js/node_modules/ws ]; then
    (cd tests/js && timeout 600 npm ci --no-audit --no-fund --loglevel=error) || fatal "npm ci in tests/js"
fi

# --- build and size ------------------------------------------------------------------------
t0=$(now_ms)
timeout 1500 cargo build --release --target "$TARGET" || fatal "cargo build --release --target $TARGET"
say "aarch64 release build: $((($(now_ms) - t0) / 1000)) s (incremental if target/ was warm)"
[ -x "$BIN" ] || fatal "no binary at $BIN"
[ "$(od -An -tx1 -j18 -N2 "$BIN" | tr -d ' \n')" = b700 ] || fatal "$BIN is not an aarch64 ELF"
aarch64-linux-gnu-strip -o "$work/stripped" "$BIN" || fatal "aarch64-linux-gnu-strip"
size=$(stat -c %s "$BIN")
stripped=$(stat -c %s "$work/stripped")
say "aarch64 binary: $size bytes as built, $stripped bytes stripped ($(awk -v b="$stripped" 'BEGIN{printf "%.2f", b/1048576}') MiB)"
if [ "$stripped" -le "$SIZE_BUDGET" ]; then
    pass "stripped aarch64 size $stripped <= $SIZE_BUDGET bytes"
else
    fail "stripped aarch64 size $stripped > $SIZE_BUDGET bytes"
fi

# --- run under qemu as systemd would --------------------------------------------------------
# A datagram socket standing in for systemd's notify socket; each message is logged with the
# wall-clock time it arrived.
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
listener_pid=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
[ -S "$work/notify.sock" ] || fatal "notify listener did not start"
touch "$work/notify.log"

start_s=$(date +%s.%N)
# The server refuses unknown STOMP_EDGE_* variables, and the test runner sets STOMP_EDGE_BIN.
env -u STOMP_EDGE_BIN NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=2000000 \
    "$QEMU" -L "$SYSROOT" "$BIN" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

port=
for _ in $(seq 600); do # 60 s
    port=$(grep -aoE 'listening on 127\.0\.0\.1:[0-9]+' "$work/server.err" | head -n 1 | sed 's/.*://')
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    sed 's/^/    server: /' "$work/server.err" | tail -n 20
    fatal "no 'listening on 127.0.0.1:PORT' line on stderr within 60 s"
fi
pass "server under qemu listening on 127.0.0.1:$port"

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

if timeout 60 node tests/js/qemu-smoke.mjs "ws://127.0.0.1:$port/ws" 45000; then
    pass "STOMP connect, subscribe /topic/qemu, send and receive"
else
    fail "STOMP round trip (tests/js/qemu-smoke.mjs)"
fi

# READY once the listener is up; WATCHDOG once a second (WATCHDOG_USEC is 2 s).
for _ in $(seq 50); do grep -q ' WATCHDOG=1$' "$work/notify.log" && break; sleep 0.1; done
ready_line=$(grep -m1 ' READY=1' "$work/notify.log")
if [ -n "$ready_line" ]; then
    pass "READY=1 received ($(awk -v a="${ready_line%% *}" -v b="$start_s" 'BEGIN{printf "%d", (a-b)*1000}') ms after start, under qemu)"
else
    fail "no READY=1 on NOTIFY_SOCKET"
fi
if grep -q ' WATCHDOG=1$' "$work/notify.log"; then
    pass "WATCHDOG=1 received ($(grep -c ' WATCHDOG=1$' "$work/notify.log") so far)"
else
    fail "no WATCHDOG=1 on NOTIFY_SOCKET within 5 s (WATCHDOG_USEC=2000000)"
fi

# SIGTERM: drain, STOPPING=1, exit 0 within the deadline (+ margin for qemu).
kill -TERM "$server_pid"
for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then
    fail "server still running 30 s after SIGTERM"
else
    wait "$server_pid"
    status=$?
    if [ "$status" -eq 0 ]; then pass "exit status 0 after SIGTERM"; else fail "exit status $status after SIGTERM"; fi
fi
server_pid=
if grep -q ' STOPPING=1' "$work/notify.log"; then pass "STOPPING=1 received"; else fail "no STOPPING=1 after SIGTERM"; fi
awk '!seen[$2]++ { print "    notify: " $2 }' "$work/notify.log"

# --- the unit ----------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    # A copy whose ExecStart names the binary just built, since /usr/local/bin/stomp-edge is
    # not installed on a build machine.
    mkdir -p "$work/unit"
    sed "s#^ExecStart=/usr/local/bin/stomp-edge #ExecStart=$(realpath "$BIN") #" systemd/stomp-edge.service \
        >"$work/unit/stomp-edge.service"
    out=$(systemd-analyze verify "$work/unit/stomp-edge.service" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] && ! grep -q 'stomp-edge.service' <<<"$out"; then
        pass "systemd-analyze verify systemd/stomp-edge.service"
    else
        fail "systemd-analyze verify (rc $rc): $out"
    fi
    # The unit as shipped: the only complaint allowed is the binary not being installed here.
    out=$(systemd-analyze verify systemd/stomp-edge.service 2>&1 | grep 'stomp-edge.service' \
        | grep -v '/usr/local/bin/stomp-edge is not executable')
    if [ -z "$out" ]; then pass "shipped unit has no complaints but the uninstalled binary"; else fail "shipped unit: $out"; fi
else
    say "SKIP systemd-analyze verify (systemd-analyze not installed)"
fi

# --- install / uninstall into a temporary root --------------------------------------------
root=$work/root
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }
# shellcheck disable=SC2016 # the conditions are eval'd by check, single quotes on purpose
if scripts/install.sh --root "$root" "$BIN" >"$work/install.log" 2>&1; then
    check "install: binary in usr/local/bin, executable, identical" \
        '[ -x "$root/usr/local/bin/stomp-edge" ] && cmp -s "$BIN" "$root/usr/local/bin/stomp-edge"'
    check "install: unit in etc/systemd/system" \
        'cmp -s systemd/stomp-edge.service "$root/etc/systemd/system/stomp-edge.service"'
    check "install: config at etc/stomp-edge/stomp-edge.toml" \
        'cmp -s config/stomp-edge.toml "$root/etc/stomp-edge/stomp-edge.toml"'
    echo '# edited on the board' >>"$root/etc/stomp-edge/stomp-edge.toml"
    scripts/install.sh --root "$root" "$BIN" >>"$work/install.log" 2>&1
    check "install again: edited config kept, new default beside it" \
        'tail -n 1 "$root/etc/stomp-edge/stomp-edge.toml" | grep -q "edited on the board" && [ -f "$root/etc/stomp-edge/stomp-edge.toml.default" ]'
    scripts/uninstall.sh --root "$root" >>"$work/install.log" 2>&1
    check "uninstall: binary and unit gone, config kept" \
        '[ ! -e "$root/usr/local/bin/stomp-edge" ] && [ ! -e "$root/etc/systemd/system/stomp-edge.service" ] && [ -f "$root/etc/stomp-edge/stomp-edge.toml" ]'
    scripts/uninstall.sh --root "$root" --purge >>"$work/install.log" 2>&1
    check "uninstall --purge: config gone" '[ ! -e "$root/etc/stomp-edge" ]'
    DESTDIR=$work/root2 scripts/install.sh "$BIN" >>"$work/install.log" 2>&1
    check "DESTDIR= works like --root" '[ -x "$work/root2/usr/local/bin/stomp-edge" ]'
else
    sed 's/^/    install: /' "$work/install.log"
    fail "scripts/install.sh --root"
fi

echo "[$TAG] $passed checks passed, $failed failed"
[ "$failed" -eq 0 ]
