#!/usr/bin/env bash
# The board build, tested under emulation: build the aarch64 release binary with Debian's cross
# gcc, print its size, run it under qemu-aarch64 as systemd would (NOTIFY_SOCKET, WATCHDOG_USEC),
# check /healthz and a STOMP round trip, READY/WATCHDOG/STOPPING and a clean SIGTERM exit, build
# and inspect the arm64 Debian package from that binary (scripts/lib/deb.sh), then
# `systemd-analyze verify` the unit and the install/uninstall scripts into a temporary root.
# Installs what it needs when missing. Exits non-zero on any failure; every wait is bounded.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TARGET=aarch64-unknown-linux-gnu
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/stomp-edge
SYSROOT=/usr/aarch64-linux-gnu
SIZE_BUDGET=${STOMP_EDGE_SIZE_BUDGET_BYTES:-4194304} # 4 MiB with TLS in (issue 24; 3 MiB before it)
TAG=50-aarch64

# shellcheck source=../lib/checks.sh
. scripts/lib/checks.sh
# shellcheck source=../lib/board-run.sh
. scripts/lib/board-run.sh
# shellcheck source=../lib/deb.sh
. scripts/lib/deb.sh

# --- toolchain: install only what is missing -----------------------------------------------
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1 || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
command -v lintian >/dev/null || need+=(lintian)
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
board_run "$QEMU" -L "$SYSROOT" "$BIN"
say "figures: stripped $stripped bytes, idle RSS under qemu-aarch64 ${BOARD_IDLE_RSS_KIB:-?} KiB"

# --- the Debian package, from the binary just built ----------------------------------------
if deb=$(bash scripts/package.sh --no-build arm64 2>"$work/package.log"); then
    deb_inspect "$deb" arm64
else
    sed 's/^/    package: /' "$work/package.log" | tail -n 20
    fail "scripts/package.sh --no-build arm64"
fi

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

checks_done
