#!/bin/sh
# Install stomp-edge as a systemd service by hand, where the Debian package (scripts/package.sh,
# docs/DEPLOY.md) cannot go: the binary, the unit and the config, then enable it.
#
#   sudo scripts/install.sh [options] [BINARY]
#
# BINARY defaults to target/aarch64-unknown-linux-musl/release/stomp-edge, then
# target/aarch64-unknown-linux-gnu/release/stomp-edge, then
# target/arm-unknown-linux-musleabihf/release/stomp-edge, then target/release/stomp-edge,
# then ./stomp-edge (all relative to the repository root, the folder above scripts/).
#
# Options:
#   --root DIR       install under DIR instead of / (also DESTDIR=DIR); no systemctl then
#   --no-systemctl   put the files in place but do not run systemctl
#   --config FILE    the config to install when none exists yet (default: config/stomp-edge.toml,
#                    else what `BINARY --print-config` prints)
#   -h, --help       this text
#
# Files: /usr/local/bin/stomp-edge, /etc/systemd/system/stomp-edge.service,
# /etc/stomp-edge/stomp-edge.toml (an existing config is never overwritten; the new default is
# written beside it as stomp-edge.toml.default), /usr/local/share/doc/stomp-edge/.
# Run it again to upgrade: a running service is restarted on the new binary.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
root=${DESTDIR:-}
use_systemctl=1
config_src=
binary=

usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        --no-systemctl) use_systemctl=0; shift ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; config_src=$2; shift 2 ;;
        --config=*) config_src=${1#--config=}; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$binary" ] || die "only one BINARY may be given"; binary=$1; shift ;;
    esac
done

# A root other than / is a staging tree (a package build or a test): never touch the live system.
root=${root%/}
[ -z "$root" ] || use_systemctl=0
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root: run it with sudo (or use --root DIR)"
fi

if [ -z "$binary" ]; then
    for candidate in \
        "$here/target/aarch64-unknown-linux-musl/release/stomp-edge" \
        "$here/target/aarch64-unknown-linux-gnu/release/stomp-edge" \
        "$here/target/arm-unknown-linux-musleabihf/release/stomp-edge" \
        "$here/target/release/stomp-edge" \
        "$here/stomp-edge"; do
        if [ -f "$candidate" ]; then binary=$candidate; break; fi
    done
    [ -n "$binary" ] || die "no binary found: build one (see docs/DEPLOY.md) or pass its path"
fi
[ -f "$binary" ] || die "no such binary: $binary"

# The ELF machine field (bytes 18-19) against this machine, so a live install of the wrong
# architecture fails here and not as "Exec format error" in the journal.
elf_arch() {
    case $(od -An -tx1 -j18 -N2 "$1" 2>/dev/null | tr -d ' \n') in
        b700) echo aarch64 ;;
        2800) echo arm ;;
        3e00) echo x86_64 ;;
        *) echo unknown ;;
    esac
}
bin_arch=$(elf_arch "$binary")
case $(uname -m) in
    aarch64|arm64) host_arch=aarch64 ;;
    arm*) host_arch=arm ;;
    x86_64|amd64) host_arch=x86_64 ;;
    *) host_arch=unknown ;;
esac
if [ "$bin_arch" != "$host_arch" ] && [ "$bin_arch" != unknown ] && [ "$host_arch" != unknown ]; then
    [ -n "$root" ] || die "$binary is built for $bin_arch but this machine is $host_arch"
    echo "install.sh: note: $binary is built for $bin_arch (this machine: $host_arch)"
fi

unit_src=$here/systemd/stomp-edge.service
[ -f "$unit_src" ] || die "missing $unit_src"

bindir=$root/usr/local/bin
unitdir=$root/etc/systemd/system
confdir=$root/etc/stomp-edge
docdir=$root/usr/local/share/doc/stomp-edge
mkdir -p "$bindir" "$unitdir" "$confdir" "$docdir"

was_active=0
if [ "$use_systemctl" = 1 ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet stomp-edge 2>/dev/null; then
    was_active=1
fi

# Binary: copy beside the old one, then rename over it, so a running server is never
# overwritten in place ("Text file busy") and a crash mid-copy leaves the old one intact.
install -m 0755 "$binary" "$bindir/.stomp-edge.new"
mv -f "$bindir/.stomp-edge.new" "$bindir/stomp-edge"
echo "installed $bindir/stomp-edge ($bin_arch, $(wc -c <"$binary" | tr -d ' ') bytes)"

install -m 0644 "$unit_src" "$unitdir/stomp-edge.service"
echo "installed $unitdir/stomp-edge.service"

# Config: the repository's default, else the one compiled into the binary.
tmp_conf=$(mktemp)
trap 'rm -f "$tmp_conf"' EXIT
if [ -n "$config_src" ]; then
    cp "$config_src" "$tmp_conf"
elif [ -f "$here/config/stomp-edge.toml" ]; then
    cp "$here/config/stomp-edge.toml" "$tmp_conf"
elif [ "$bin_arch" = "$host_arch" ] && "$binary" --print-config >"$tmp_conf" 2>/dev/null && [ -s "$tmp_conf" ]; then
    :
else
    die "no default config: pass --config FILE (config/stomp-edge.toml in the repository)"
fi
if [ -e "$confdir/stomp-edge.toml" ]; then
    install -m 0644 "$tmp_conf" "$confdir/stomp-edge.toml.default"
    echo "kept existing $confdir/stomp-edge.toml (new defaults in stomp-edge.toml.default)"
else
    install -m 0644 "$tmp_conf" "$confdir/stomp-edge.toml"
    echo "installed $confdir/stomp-edge.toml"
fi

for doc in README.md docs/DEPLOY.md; do
    if [ -f "$here/$doc" ]; then install -m 0644 "$here/$doc" "$docdir/$(basename "$doc")"; fi
done

if [ "$use_systemctl" = 0 ]; then
    echo "systemctl skipped; on the board run: systemctl daemon-reload && systemctl enable --now stomp-edge"
    exit 0
fi
if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
    echo "systemd is not running here; files are in place, start stomp-edge by hand or on a systemd host"
    exit 0
fi
systemctl daemon-reload
systemctl enable --now stomp-edge
if [ "$was_active" = 1 ]; then
    systemctl restart stomp-edge
    echo "restarted stomp-edge on the new binary"
fi
systemctl --no-pager --lines=5 status stomp-edge || true
echo "check: curl http://localhost:8080/healthz   logs: journalctl -u stomp-edge -f"
