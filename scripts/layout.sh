#!/usr/bin/env bash
# Write cross/layout/TRIPLE.ld, the code layout of a board binary: the functions that a start, an
# idle second and one STOMP round trip run, in the order they first ran, for the linker to place
# first and together (scripts/lib/cross.sh board_build passes it to Zig's linker with -T).
#
#   bash scripts/layout.sh [TRIPLE...]   (default: aarch64-unknown-linux-musl arm-unknown-linux-musleabihf)
#
# Why: the kernel maps a binary's code in blocks of 16 pages (64 KiB) around each page touched,
# from the page cache, and counts them all in the process's RSS. stomp-edge's start touches
# about 1,100 functions spread over its whole 3 MiB text, so nearly all of it was resident in an
# idle board; placed together they fill a few hundred KiB (docs/MEMORY.md, "The board binary").
#
# How: build the binary as the package does but with its symbols kept (target/layout), run it
# under qemu-user with `-d in_asm` (qemu logs each block of guest code the first time it
# translates it, with its symbol), start it as systemd would (NOTIFY_SOCKET, WATCHDOG_USEC), ask
# /healthz, let it idle 1 s, make one STOMP round trip (tests/js/qemu-smoke.mjs), let it idle
# 2 s, stop it with SIGTERM. The symbols come out in first-run order. Rust's v0 symbol names
# carry hashes (crate disambiguators, and back-references whose positions follow them) that
# change with the build's profile, flags and dependencies; board_build keeps the first two the
# same for this build and the package's, and the names are written as linker-script globs with
# those parts as `*`, so the file stays valid across ordinary changes: a function renamed or new
# since is only left in its usual place. Regenerate it after large changes; the board test
# steps print how much of the binary's code an idle start keeps resident.
#
# Needs what package.sh needs for that target (installed when missing) and qemu-user-static.
# Takes 4-5 minutes per target on 2 cores. Touches src/main.rs so the next build relinks with the
# new layout (cargo does not watch linker scripts).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { echo "layout.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=scripts/lib/cross.sh
. scripts/lib/cross.sh

[ $# -gt 0 ] || set -- aarch64-unknown-linux-musl arm-unknown-linux-musleabihf
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
apt_install_missing "${need[@]}" || die "apt-get install ${need[*]}"
zig_tools || die "installing Zig, cargo-zigbuild and rust-src"
if [ ! -d tests/js/node_modules/@stomp/stompjs ] || [ ! -d tests/js/node_modules/ws ]; then
    (cd tests/js && timeout 600 npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/js"
fi

work=$(mktemp -d)
server=
listener=
cleanup() {
    [ -z "$server" ] || kill -KILL "$server" 2>/dev/null || true
    [ -z "$listener" ] || kill "$listener" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for triple in "$@"; do
    case $triple in
        aarch64-*) qemu=(qemu-aarch64-static) ;;
        arm-*) qemu=(qemu-arm-static -cpu arm1176) ;;
        x86_64-*) qemu=(qemu-x86_64-static) ;;
        *) die "no qemu known for $triple" ;;
    esac
    say "$triple: building with symbols in target/layout"
    CARGO_TARGET_DIR=target/layout BOARD_BUILD_KEEP_SYMBOLS=1 board_build "$triple" >&2 \
        || die "build for $triple"
    bin=target/layout/$triple/release/stomp-edge

    say "$triple: start as systemd would, /healthz, 1 s idle, one STOMP round trip, 2 s idle, SIGTERM under ${qemu[*]}"
    rm -f "$work/trace" "$work/err" "$work/notify.sock"
    # systemd's notify socket, read and dropped: under systemd the server sends READY, STATUS and
    # a watchdog ping every half WATCHDOG_USEC, and that code is part of an idle board's.
    python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(1)
end = time.time() + 300
while time.time() < end:
    try: s.recv(4096)
    except socket.timeout: pass' "$work/notify.sock" &
    listener=$!
    for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
    env -u STOMP_EDGE_BIN NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=2000000 \
        "${qemu[@]}" -d in_asm -D "$work/trace" "$bin" --listen 127.0.0.1:0 >/dev/null 2>"$work/err" &
    server=$!
    port=
    for _ in $(seq 600); do
        port=$(grep -aoE 'listening on 127\.0\.0\.1:[0-9]+' "$work/err" | head -n 1 | sed 's/.*://') || true
        [ -n "$port" ] && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { tail -n 20 "$work/err" >&2; die "$triple: the server did not start"; }
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=30).read()' \
        "http://127.0.0.1:$port/healthz" || die "$triple: GET /healthz"
    sleep 1
    timeout 60 node tests/js/qemu-smoke.mjs "ws://127.0.0.1:$port/ws" 45000 >&2 || die "$triple: STOMP round trip"
    sleep 2
    kill -TERM "$server"
    wait "$server" || die "$triple: exit status $? after SIGTERM"
    server=
    kill "$listener" 2>/dev/null || true
    listener=

    mkdir -p cross/layout
    python3 - "$work/trace" "cross/layout/$triple.ld" "$triple" <<'EOF'
import re, sys, time, subprocess
trace, out, triple = sys.argv[1:4]

def glob(name):
    # v0 mangling (RFC 2603): a crate root is C s<base62>_ <length><name>; the disambiguator is a
    # hash, and back-references B<base62>_ are byte offsets that move with its length.
    if name.startswith("_R"):
        name = re.sub(r"Cs[0-9A-Za-z]*_(?=[0-9])", "Cs*_", name)
        name = re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
    return name

seen, order = set(), []
with open(trace, errors="replace") as f:
    for line in f:
        if line.startswith("IN: "):
            name = line[4:].strip()
            if name and not name.startswith(".") and re.fullmatch(r"[A-Za-z0-9_$.]+", name):
                g = glob(name)
                if g not in seen:
                    seen.add(g)
                    order.append(g)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(out, "w") as f:
    f.write(f"/* The code layout of the {triple} binary: written by scripts/layout.sh from commit\n"
            f"   {commit} on {time.strftime('%Y-%m-%d')}, not by hand. {len(order)} functions in the order a start, an\n"
            "   idle second and one STOMP round trip first ran them (qemu -d in_asm), placed first in the\n"
            "   text and together; `*` stands for the hashes in Rust symbol names. INSERT BEFORE keeps\n"
            "   the linker's own layout for everything else. Why: docs/MEMORY.md, \"The board binary\". */\n")
    f.write("SECTIONS {\n  .text.startup_path : {\n")
    for g in order:
        f.write(f"    *(.text.{g} .text.unlikely.{g})\n")
    # musl, Zig's own C functions and compiler-rt come as archives whose code is not split one
    # function per section, so the names above cannot move it; what of them is linked in is small
    # and nearly all of it runs at start.
    f.write("    *libc.a:*(.text .text.*)\n    *libzigc.a:*(.text .text.*)\n"
            "    *libcompiler_rt.a:*(.text .text.*)\n")
    f.write("  }\n} INSERT BEFORE .text;\n")
print(f"layout.sh: {triple}: {len(order)} functions in {out}", file=sys.stderr)
EOF
done
touch src/main.rs
