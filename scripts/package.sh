#!/usr/bin/env bash
# Build the Debian package of stomp-edge for one or more boards, installing the tools it needs
# when they are missing (cargo-deb from crates.io; Zig and cargo-zigbuild from PyPI for the
# boards' static builds):
#
#   bash scripts/package.sh [--no-build] [--deb-version VERSION] [amd64|arm64|armhf|all]...
#
# Writes target/debian/stomp-edge_<version>_<arch>.deb (default: all three) and prints its path.
#   amd64  x86_64-unknown-linux-gnu, this machine's glibc
#   arm64  aarch64-unknown-linux-musl, static: 64-bit Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W)
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

# shellcheck source=scripts/lib/cross.sh
. scripts/lib/cross.sh

need_tools() { # ARCH: install what building and packaging ARCH needs, only when missing
    local need=()
    command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
    apt_install_missing "${need[@]}" || die "apt-get install ${need[*]}"
    if ! cargo deb --version >/dev/null 2>&1; then
        say "cargo install --locked cargo-deb (crates.io)"
        cargo install --locked cargo-deb || die "cargo install cargo-deb"
    fi
    case $1 in
        arm64 | armhf) zig_tools || die "installing Zig, cargo-zigbuild and rust-src" ;;
    esac
}

triple_of() {
    case $1 in
        amd64) echo x86_64-unknown-linux-gnu ;;
        arm64) echo aarch64-unknown-linux-musl ;;
        armhf) echo arm-unknown-linux-musleabihf ;;
    esac
}

build_binary() { # ARCH
    case $1 in
        amd64) cargo build --release ;;
        # The boards' binaries are static musl builds, linked by Zig (scripts/lib/cross.sh):
        # - armhf: ARMv6 + VFPv2, hard float, so one binary serves every 32-bit board, the Pi
        #   Zero W and Pi 1 included (Debian's armhf glibc is ARMv7 code);
        # - arm64: no shared glibc to map and relocate at each start, so the board idles in less
        #   memory and starts faster (docs/MEMORY.md), and one binary runs on any arm64 OS image,
        #   older than the build machine's glibc or not.
        arm64 | armhf) board_build "$(triple_of "$1")" ;;
    esac
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
    [ "$arch" = amd64 ] || variant=(--variant static)
    bin=$target_dir/${target_args[1]:-}/release/stomp-edge
    [ -f "$bin" ] || die "no binary at $bin (build it, or drop --no-build)"
    # The release profile strips already; no target strip tool needed.
    deb=$(cargo deb --no-build --no-strip --quiet "${target_args[@]}" "${variant[@]}" "${deb_version[@]}" \
        --output "$out_dir") || die "cargo deb for $arch"
    echo "$deb"
done
