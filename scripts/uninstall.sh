#!/bin/sh
# Remove the stomp-edge service installed by scripts/install.sh: stop and disable it, then remove
# the binary, the unit and the docs. /etc/stomp-edge (the config) is kept unless --purge.
#
#   sudo scripts/uninstall.sh [--purge] [--root DIR] [--no-systemctl]
#
# Options:
#   --purge          also remove /etc/stomp-edge
#   --root DIR       remove from under DIR instead of / (also DESTDIR=DIR); no systemctl then
#   --no-systemctl   remove the files but do not run systemctl
#   -h, --help       this text
set -eu

root=${DESTDIR:-}
use_systemctl=1
purge=0

usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "uninstall.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --purge) purge=1; shift ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        --no-systemctl) use_systemctl=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

root=${root%/}
[ -z "$root" ] || use_systemctl=0
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    die "removing from / needs root: run it with sudo (or use --root DIR)"
fi
if [ "$use_systemctl" = 1 ] && { ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; }; then
    use_systemctl=0
fi

if [ "$use_systemctl" = 1 ]; then
    # Stops it too; the unit may already be gone, which is fine.
    systemctl disable --now stomp-edge 2>/dev/null || true
fi

rm -f "$root/usr/local/bin/stomp-edge" "$root/etc/systemd/system/stomp-edge.service"
rm -rf "$root/usr/local/share/doc/stomp-edge"
echo "removed $root/usr/local/bin/stomp-edge and $root/etc/systemd/system/stomp-edge.service"

if [ "$purge" = 1 ]; then
    rm -rf "$root/etc/stomp-edge"
    echo "removed $root/etc/stomp-edge"
else
    [ ! -d "$root/etc/stomp-edge" ] || echo "kept $root/etc/stomp-edge (remove it with --purge)"
fi

if [ "$use_systemctl" = 1 ]; then
    systemctl daemon-reload
    systemctl reset-failed stomp-edge 2>/dev/null || true
fi
