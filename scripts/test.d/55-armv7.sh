#!/usr/bin/env bash
# The 32-bit build for older boards (Raspberry Pi 2/3 on 32-bit Raspberry Pi OS): build the
# armv7 release binary with Debian's cross gcc, print its size, run it under qemu-arm and check
# /healthz and a STOMP round trip. Installs what it needs when missing; every wait is bounded.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TARGET=armv7-unknown-linux-gnueabihf
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/stomp-edge
TAG=55-armv7
say() { echo "[$TAG] $*"; }
fatal() { say "FAIL $*"; exit 1; }

need=()
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
dpkg -s libc6-dev-armhf-cross >/dev/null 2>&1 || need+=(libc6-dev-armhf-cross)
command -v qemu-arm-static >/dev/null || need+=(qemu-user-static)
# shellcheck source=../lib/cross.sh
. scripts/lib/cross.sh
apt_install_missing "${need[@]}" || fatal "apt-get install ${need[*]}"
rust_target "$TARGET" || fatal "rustup target add $TARGET"

timeout 1500 cargo build --release --target "$TARGET" || fatal "cargo build --release --target $TARGET"
say "armv7 binary: $(stat -c %s "$BIN") bytes"

log=$(mktemp)
# The server refuses unknown STOMP_EDGE_* variables, and the test runner sets STOMP_EDGE_BIN.
env -u STOMP_EDGE_BIN QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf qemu-arm-static -L /usr/arm-linux-gnueabihf "$BIN" --listen 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill -KILL $pid 2>/dev/null; rm -f "$log"' EXIT
addr=
for _ in $(seq 200); do
    addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | head -1 | cut -d' ' -f3)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || fatal "no 'listening on' line within 20 s: $(cat "$log")"
health=$(curl -sf --max-time 5 "http://$addr/healthz") || fatal "GET /healthz"
say "PASS /healthz: $health"
timeout 30 node tests/js/qemu-smoke.mjs "ws://$addr/ws" || fatal "STOMP round trip under qemu-arm"
say "PASS STOMP connect, subscribe, send and receive under qemu-arm"
kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
say "2 checks passed, 0 failed"
