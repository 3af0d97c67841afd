#!/usr/bin/env bash
# Build the Debian package of stomp-edge for one or more boards, installing the tools it needs
# when they are missing (cargo-deb from crates.io; Debian's cross gcc; Zig and cargo-zigbuild from
# PyPI for the ARMv6 build):
#
#   bash scripts/package.sh [--no-build] [--deb-version VERSION] [amd64|arm64|armhf|all]...
#
# Writes target/debian/stomp-edge_<version>_<arch>.deb (default: all three) and prints its path.
#   amd64  x86_64-unknown-linux-gnu, this machine's glibc
#   arm64  aarch64-unknown-linux-gnu: 64-bit Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W)
#   armhf  arm-unknown-linux-musleabihf, static: 32-bit Raspberry Pi OS on every board, the ARMv6
#          Pi Zero W and Pi 1 included (Debian's armhf glibc is ARMv7 code; see docs/DEPLOY.md)
# Options:
#   --no-build             package the release binary already built for that target
#   --deb-version VERSION  the package version instead of Cargo.toml's version + "-1"
#   -h, --help             this text
# The package's contents and scripts are in Cargo.toml [package.metadata.deb] and debian/.
set -euo pipefail

cd "$(dirname "$0")/.."
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
say() { echo "package.sh: $*" >&2; }
die() { say "$*"; exit 1; }

build=1
deb_version=()
arches=()
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) build=0; shift ;;
        --deb-version) [ $# -ge 2 ] || die "--deb-version needs a version"; deb_version=(--deb-version "$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        all) arches+=(amd64 arm64 armhf); shift ;;
        amd64|arm64|armhf) arches+=("$1"); shift ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)

target_dir=${CARGO_TARGET_DIR:-target}
out_dir=$target_dir/debian
# Pinned: the ARMv6 binary is linked by this Zig (its musl and libunwind, built for the target CPU).
ZIG_PINS=(ziglang==0.17.1 cargo-zigbuild==0.24.1)
zig_venv=target/zig-venv

# shellcheck source=scripts/lib/cross.sh
. scripts/lib/cross.sh

need_tools() { # ARCH: install what building and packaging ARCH needs, only when missing
    local need=()
    command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
    case $1 in
        arm64)
            command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
            dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1 || need+=(libc6-dev-arm64-cross)
            ;;
        armhf)
            python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
            ;;
    esac
    apt_install_missing "${need[@]}" || die "apt-get install ${need[*]}"
    if ! cargo deb --version >/dev/null 2>&1; then
        say "cargo install --locked cargo-deb (crates.io)"
        cargo install --locked cargo-deb || die "cargo install cargo-deb"
    fi
    case $1 in
        arm64) rust_target aarch64-unknown-linux-gnu || die "rustup target add aarch64-unknown-linux-gnu" ;;
        armhf)
            # std is built from source for this target (-Zbuild-std below), so rust-src is needed
            # and the target's prebuilt std is not.
            rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
                || rustup component add rust-src || die "rustup component add rust-src"
            local have
            have=$("$zig_venv/bin/python3" -m pip freeze 2>/dev/null || true)
            if [ "$(grep -cxF -e "${ZIG_PINS[0]}" -e "${ZIG_PINS[1]}" <<<"$have")" != 2 ]; then
                say "installing ${ZIG_PINS[*]} (PyPI) in $zig_venv"
                python3 -m venv "$zig_venv" && "$zig_venv/bin/python3" -m pip install -q "${ZIG_PINS[@]}" \
                    || die "pip install ${ZIG_PINS[*]}"
            fi
            ;;
    esac
}

triple_of() {
    case $1 in
        amd64) echo x86_64-unknown-linux-gnu ;;
        arm64) echo aarch64-unknown-linux-gnu ;;
        armhf) echo arm-unknown-linux-musleabihf ;;
    esac
}

build_binary() { # ARCH
    case $1 in
        amd64) cargo build --release ;;
        arm64) cargo build --release --target aarch64-unknown-linux-gnu ;;
        armhf)
            # ARMv6 + VFPv2, hard float: Rust's arm-unknown-linux-musleabihf target. std is
            # compiled for it from rust-src (RUSTC_BOOTSTRAP lets the stable compiler take
            # -Zbuild-std), so no ARMv7 code comes in from a prebuilt library. cargo-zigbuild
            # links with Zig, which builds musl's start files, libc and libunwind for that CPU,
            # and sets CC_/CXX_/AR_arm_unknown_linux_musleabihf for the cc crate, with the CPU
            # flags of the Rust target (-mcpu=generic+v6+strict_align+vfp2-d32), so C inside a
            # crate (ring) is ARMv6 code too. link-self-contained=no: Zig supplies the start
            # files, not the Rust target's (absent) self-contained ones.
            PATH=$PWD/$zig_venv/bin:$PATH RUSTC_BOOTSTRAP=1 \
                CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no" \
                cargo zigbuild --release --target arm-unknown-linux-musleabihf -Zbuild-std=std,panic_unwind
            ;;
    esac
}

# Depends for a glibc build made on another architecture. Natively, dpkg-shlibdeps reads libc6's
# symbols file and asks for the newest glibc symbol version the binary uses (libc6 (>= 2.34) on
# Debian 12). For arm64 it finds only the cross libc's shlibs file, which names
# `libc6:arm64 (>= 2.36)`, the cross package's own version: too strict, and arch-qualified. So
# the libc6 part is taken from the binary's symbol versions the same way, and the field is written
# back with dpkg-deb.
cross_libc_depends() { # DEB BINARY
    local min tmp
    min=$(objdump -T "$2" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    [ -n "$min" ] || die "no GLIBC_ symbol version in $2"
    tmp=$(mktemp -d)
    dpkg-deb --raw-extract "$1" "$tmp/pkg" \
        && sed -i "s/^Depends: .*/Depends: adduser, libc6 (>= $min)/" "$tmp/pkg/DEBIAN/control" \
        && dpkg-deb --root-owner-group -Zxz --build "$tmp/pkg" "$1" >/dev/null \
        || { rm -rf "$tmp"; die "rewriting Depends of $1"; }
    rm -rf "$tmp"
}

# The unit as packaged: the repository's, naming the binary where the package puts it.
mkdir -p target/debian/systemd "$out_dir"
sed -e 's#/usr/local/bin/stomp-edge#/usr/bin/stomp-edge#g' \
    -e 's#file:///usr/local/share/doc/stomp-edge/README.md#file:///usr/share/doc/stomp-edge/DEPLOY.md#' \
    systemd/stomp-edge.service >target/debian/systemd/stomp-edge.service

for arch in "${arches[@]}"; do
    triple=$(triple_of "$arch")
    # Only the package's path goes to standard output.
    need_tools "$arch" >&2
    if [ "$build" = 1 ]; then
        say "building the $arch release binary ($triple)"
        build_binary "$arch" >&2 || die "build for $triple"
    fi
    target_args=()
    variant=()
    [ "$arch" = amd64 ] || target_args=(--target "$triple")
    [ "$arch" != armhf ] || variant=(--variant static)
    bin=$target_dir/${target_args[1]:-}/release/stomp-edge
    [ -f "$bin" ] || die "no binary at $bin (build it, or drop --no-build)"
    # The release profile strips already; no target strip tool needed.
    deb=$(cargo deb --no-build --no-strip --quiet "${target_args[@]}" "${variant[@]}" "${deb_version[@]}" \
        --output "$out_dir") || die "cargo deb for $arch"
    [ "$arch" != arm64 ] || cross_libc_depends "$deb" "$bin"
    echo "$deb"
done
