#!/usr/bin/env bash
# The 32-bit build for every 32-bit Raspberry Pi OS board, the ARMv6 Pi Zero W and Pi 1 included:
# `scripts/package.sh armhf` builds the static arm-unknown-linux-musleabihf release binary (std
# and C code compiled for ARMv6, linked by Zig: docs/DEPLOY.md) and its Debian package; this
# step inspects the package (scripts/lib/deb.sh), checks the ELF's build attributes say ARMv6,
# and runs the binary under `qemu-arm -cpu arm1176` (the Pi Zero W's CPU: an ARMv7 instruction
# is an illegal instruction there) with the aarch64 step's checks (scripts/lib/board-run.sh).
# An ARMv6 binary runs on ARMv7/ARMv8 too, so this replaces the armv7 step. Installs what it
# needs when missing; every wait is bounded.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TARGET=arm-unknown-linux-musleabihf
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/stomp-edge
TAG=55-armv6

# shellcheck source=../lib/checks.sh
. scripts/lib/checks.sh
# shellcheck source=../lib/board-run.sh
. scripts/lib/board-run.sh
# shellcheck source=../lib/deb.sh
. scripts/lib/deb.sh

need=()
command -v qemu-arm-static >/dev/null || need+=(qemu-user-static)
command -v lintian >/dev/null || need+=(lintian)
command -v readelf >/dev/null || need+=(binutils)
# shellcheck source=../lib/cross.sh
. scripts/lib/cross.sh
apt_install_missing "${need[@]}" || fatal "apt-get install ${need[*]}"
if [ ! -d tests/js/node_modules/@stomp/stompjs ] || [ ! -d tests/js/node_modules/ws ]; then
    (cd tests/js && timeout 600 npm ci --no-audit --no-fund --loglevel=error) || fatal "npm ci in tests/js"
fi

# --- build and package (package.sh installs its own tools) ----------------------------------
t0=$(now_ms)
deb=$(timeout 1500 bash scripts/package.sh armhf) || fatal "bash scripts/package.sh armhf"
say "armhf build and package: $((($(now_ms) - t0) / 1000)) s (incremental if target/ was warm)"
[ -x "$BIN" ] || fatal "no binary at $BIN"
deb_inspect "$deb" armhf

# --- ARMv6 only -------------------------------------------------------------------------------
attrs=$(readelf -A "$BIN")
if grep -q 'Tag_CPU_arch: v6$' <<<"$attrs" && grep -q 'Tag_ABI_VFP_args: VFP registers' <<<"$attrs"; then
    pass "ELF attributes: Tag_CPU_arch v6, hard-float calling convention"
else
    fail "ELF attributes are not ARMv6 hard-float: $(grep -E 'Tag_CPU_arch|VFP_args' <<<"$attrs" | tr -s ' ')"
fi
board_static_layout_check "$BIN" "$TARGET"
size=$(stat -c %s "$BIN")
say "armv6 binary: $size bytes stripped ($(awk -v b="$size" 'BEGIN{printf "%.2f", b/1048576}') MiB), package $(stat -c %s "$deb") bytes"

# --- run it on an ARMv6 CPU -----------------------------------------------------------------
board_run qemu-arm-static -cpu arm1176 "$BIN"
say "figures: stripped $size bytes, start to READY ${BOARD_READY_MS:-?} ms, binary resident when idle ${BOARD_IMAGE_RSS_KIB:-?} KiB, idle RSS under qemu-arm -cpu arm1176 ${BOARD_IDLE_RSS_KIB:-?} KiB (emulator included)"

checks_done
