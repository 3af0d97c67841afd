# shellcheck shell=bash
# Shared by the board-build steps in scripts/test.d, scripts/package.sh and scripts/layout.sh:
# install what a cross build needs when it is missing, and build a board binary. Source it from
# the repository root, then call `apt_install_missing PKG...` (only the packages not yet present
# are passed), `zig_tools` and `board_build TRIPLE`. All return non-zero on
# failure; callers decide.

apt_install_missing() {
    [ $# -gt 0 ] || return 0
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "installing $*"
    timeout 600 $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive timeout 900 $sudo apt-get install -y -qq --no-install-recommends "$@"
}


# The board binaries are static musl builds linked by this Zig (its musl, libunwind and start
# files, built for the target CPU), installed from PyPI into a venv of their own. Pinned.
ZIG_PINS=(ziglang==0.17.1 cargo-zigbuild==0.24.1)
ZIG_VENV=target/zig-venv

# zig_tools: rust-src (std is built from source for the board targets) and the pinned Zig and
# cargo-zigbuild, each only when missing.
zig_tools() {
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install_missing python3-venv || return 1
    rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
        || timeout 600 rustup component add rust-src || return 1
    local have
    have=$("$ZIG_VENV/bin/python3" -m pip freeze 2>/dev/null || true)
    if [ "$(grep -cxF -e "${ZIG_PINS[0]}" -e "${ZIG_PINS[1]}" <<<"$have")" != 2 ]; then
        echo "installing ${ZIG_PINS[*]} (PyPI) in $ZIG_VENV"
        python3 -m venv "$ZIG_VENV" && timeout 900 "$ZIG_VENV/bin/python3" -m pip install -q "${ZIG_PINS[@]}"
    fi
}

# board_build TRIPLE [CARGO_ARGS...]: the static release binary for a board target
# (aarch64-unknown-linux-musl, arm-unknown-linux-musleabihf), at
# ${CARGO_TARGET_DIR:-target}/TRIPLE/release/stomp-edge.
#
# std is compiled for the target from rust-src (RUSTC_BOOTSTRAP lets the stable compiler take
# -Zbuild-std), so no code for another CPU comes in from a prebuilt library: for ARMv6 this is
# what keeps ARMv7 instructions out. cargo-zigbuild links with Zig, which builds musl's start
# files, libc and libunwind for that CPU and sets CC_/CXX_/AR_<triple> for the cc crate with the
# Rust target's CPU flags, so C inside a crate (mimalloc, ring) is built for it too.
# link-self-contained=no: Zig supplies the start files, not the Rust target's self-contained ones.
#
# When cross/layout/TRIPLE.ld exists (written by scripts/layout.sh), the linker places the
# functions it lists (those a start, an idle second and one STOMP round trip run) first and
# together, in the order they first ran: the kernel maps a binary's code 16 pages around each page
# touched, so code spread over the whole text costs resident memory and, from an SD card, reads
# (docs/MEMORY.md, "The board binary").
#
# The binary is stripped after the build, not by the release profile: a profile setting goes into
# every crate's -C metadata and so into the hashes in its symbol names, and scripts/layout.sh
# builds this same way with the symbols kept (BOARD_BUILD_KEEP_SYMBOLS=1) to name the functions
# the layout lists. The strip tool is the target's binutils from Debian (board_strip_tool).
board_build() {
    local triple=$1
    shift
    local var flags="-C link-self-contained=no" strip
    var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
    [ ! -f "cross/layout/$triple.ld" ] || flags+=" -C link-arg=-Wl,-T,$PWD/cross/layout/$triple.ld"
    strip=$(board_strip_tool "$triple") || return 1
    env PATH="$PWD/$ZIG_VENV/bin:$PATH" RUSTC_BOOTSTRAP=1 "$var=$flags" CARGO_PROFILE_RELEASE_STRIP=false \
        cargo zigbuild --release --target "$triple" -Zbuild-std=std,panic_unwind "$@" || return 1
    [ -n "${BOARD_BUILD_KEEP_SYMBOLS:-}" ] || "$strip" "${CARGO_TARGET_DIR:-target}/$triple/release/stomp-edge"
}

# board_strip_tool TRIPLE: prints the strip command for the target, installing Debian's binutils
# for it when missing.
board_strip_tool() {
    local tool pkg
    case $1 in
        aarch64-*) tool=aarch64-linux-gnu-strip pkg=binutils-aarch64-linux-gnu ;;
        arm-*) tool=arm-linux-gnueabihf-strip pkg=binutils-arm-linux-gnueabihf ;;
        x86_64-*) tool=strip pkg=binutils ;;
        *) echo "no strip tool known for $1" >&2; return 1 ;;
    esac
    command -v "$tool" >/dev/null || apt_install_missing "$pkg" >&2 || return 1
    echo "$tool"
}
