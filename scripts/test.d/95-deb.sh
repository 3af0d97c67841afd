#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2034,SC2015 # check eval's its single-quoted conditions (which use $wants); pass returns 0
# The amd64 Debian package, installed for real in a throwaway root: `scripts/package.sh amd64`
# (after 90-bench the release binary is already built), inspected (scripts/lib/deb.sh), then, in
# an overlay of this machine's own root (upper layer on a tmpfs; nothing reaches the machine) with
# chroot and /proc, /dev mounted: `apt-get install ./…deb` (maintainer scripts run: user made,
# unit enabled, no start since systemd does not run there), the installed binary serves /healthz
# with the installed config as the stomp-edge user, `systemd-analyze verify` of the installed
# unit, the conffile edited, an upgrade to a second build with another version (edit kept, no
# prompt), remove (config and user kept) and purge (config, user, enablement gone).
# Needs root (mount, chroot). Every wait is bounded; every mount is undone on exit.
set -uo pipefail

cd "${REPO_ROOT:-$(dirname "$0")/../..}" || exit 1
TAG=95-deb
# shellcheck source=../lib/checks.sh
. scripts/lib/checks.sh

[ "$(id -u)" -eq 0 ] || fatal "needs root for mount and chroot"
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v deb-systemd-helper >/dev/null || need+=(init-system-helpers)
command -v adduser >/dev/null || need+=(adduser)
# shellcheck source=../lib/cross.sh
. scripts/lib/cross.sh
apt_install_missing "${need[@]}" || fatal "apt-get install ${need[*]}"
# shellcheck source=../lib/deb.sh
. scripts/lib/deb.sh

work=$(mktemp -d)
root=$work/root
server_pid=
mounts=()
cleanup() {
    [ -z "$server_pid" ] || kill -KILL "$server_pid" 2>/dev/null
    wait 2>/dev/null
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mnt() { # mount ARGS... TARGET (the last argument), remembered for cleanup
    mount "$@" || return 1
    mounts+=("${!#}")
}

# --- build and inspect: the first version, and a second one to upgrade to ------------------
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
deb1=$(timeout 1500 bash scripts/package.sh amd64) || fatal "bash scripts/package.sh amd64"
deb_inspect "$deb1" amd64
# cargo-deb replaces older builds of the package in target/debian: keep this one aside.
cp "$deb1" "$work/" && deb1=$work/$(basename "$deb1")
deb2=$(bash scripts/package.sh --no-build --deb-version "$version-2~upgrade" amd64) \
    || fatal "bash scripts/package.sh --deb-version $version-2~upgrade amd64"
[ "$deb1" != "$deb2" ] || fatal "the second build has the same file name: $deb2"
check "second build is version $version-2~upgrade" '[ "$(dpkg-deb --field "$deb2" Version)" = "$version-2~upgrade" ]'

# --- the throwaway root -----------------------------------------------------------------------
mkdir -p "$work/layers" "$root"
mnt -t tmpfs -o size=512m tmpfs "$work/layers" || fatal "mount tmpfs"
mkdir -p "$work/layers/upper" "$work/layers/work"
mnt -t overlay overlay -o "lowerdir=/,upperdir=$work/layers/upper,workdir=$work/layers/work" "$root" \
    || fatal "mount overlay of / (needs overlayfs)"
mnt -t proc proc "$root/proc" || fatal "mount proc"
mnt --bind /dev "$root/dev" || fatal "bind /dev"
# Whatever the machine's /run and /tmp hold is not the chroot's business; and no service may be
# started in there through invoke-rc.d either (deb-systemd-invoke asks policy-rc.d).
mnt -t tmpfs tmpfs "$root/run" || fatal "mount /run"
mnt -t tmpfs tmpfs "$root/tmp" || fatal "mount /tmp"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
cp "$deb1" "$deb2" "$root/tmp/"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
getent_root() { in_root getent "$@" >/dev/null; }
if getent_root passwd stomp-edge; then fatal "this machine already has a stomp-edge user: the test could not tell"; fi
apt_in_root() { # FILE: `apt-get install ./FILE` from /tmp in the root, as a user would
    in_root env --chdir=/tmp apt-get install -y -q -o Dpkg::Use-Pty=0 "./$1" >>"$work/apt.log" 2>&1
}
conf=$root/etc/stomp-edge/stomp-edge.toml
unit=$root/usr/lib/systemd/system/stomp-edge.service
wants=$root/etc/systemd/system/multi-user.target.wants/stomp-edge.service

# --- install --------------------------------------------------------------------------------
if apt_in_root "$(basename "$deb1")"; then
    pass "apt-get install ./$(basename "$deb1") in the overlay root"
else
    sed 's/^/    apt: /' "$work/apt.log" | tail -n 30
    fatal "apt-get install ./$(basename "$deb1")"
fi
[ ! -e /usr/bin/stomp-edge ] || fatal "/usr/bin/stomp-edge appeared on the machine itself"
check "installed: /usr/bin/stomp-edge, the unit, the config" '[ -x "$root/usr/bin/stomp-edge" ] && [ -f "$unit" ] && cmp -s config/stomp-edge.toml "$conf"'
check "dpkg records the conffile" 'in_root dpkg-query -W -f="\${Conffiles}" stomp-edge | grep -q "^ /etc/stomp-edge/stomp-edge.toml [0-9a-f]\{32\}$"'
uid=$(in_root id -u stomp-edge 2>/dev/null)
gid=$(in_root id -g stomp-edge 2>/dev/null)
check "postinst made the system user stomp-edge (uid $uid), its group, shell nologin" \
    '[ -n "$uid" ] && [ "$uid" -lt 1000 ] && getent_root group stomp-edge && in_root getent passwd stomp-edge | grep -q ":/usr/sbin/nologin$"'
check "postinst enabled the unit (multi-user.target.wants), systemd not running: not started" \
    '[ "$(readlink "$wants")" = /lib/systemd/system/stomp-edge.service ] || [ "$(readlink "$wants")" = /usr/lib/systemd/system/stomp-edge.service ]'

out=$(in_root systemd-analyze verify /usr/lib/systemd/system/stomp-edge.service 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && ! grep -q 'stomp-edge' <<<"$out"; then
    pass "systemd-analyze verify of the installed unit"
else
    fail "systemd-analyze verify (rc $rc): $out"
fi

# The installed binary, as the service user, with the installed config; only the listen address
# is overridden (a free loopback port).
serve_healthz() { # LABEL: start it, GET /healthz, stop it with SIGTERM
    rm -f "$work/server.err"
    chroot --userspec="$uid:$gid" "$root" env -i PATH=/usr/bin:/bin \
        /usr/bin/stomp-edge --config /etc/stomp-edge/stomp-edge.toml --listen 127.0.0.1:0 2>"$work/server.err" &
    server_pid=$!
    local addr='' _
    for _ in $(seq 100); do
        addr=$(grep -aoE 'listening on 127\.0\.0\.1:[0-9]+' "$work/server.err" | head -n 1 | cut -d' ' -f3)
        [ -n "$addr" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    local health
    last_health=
    if [ -n "$addr" ] && health=$(curl -sf --max-time 5 "http://$addr/healthz") && grep -q '"status":"ok"' <<<"$health"; then
        last_health=$health
        pass "$1: /usr/bin/stomp-edge as stomp-edge with /etc/stomp-edge/stomp-edge.toml serves /healthz: $health"
    else
        sed 's/^/    server: /' "$work/server.err" | tail -n 10
        fail "$1: no /healthz from the installed binary"
    fi
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=
}
serve_healthz "installed"

# --- edit the config, upgrade -----------------------------------------------------------------
# An edit the server shows: its id in /healthz (a log level would need a DEBUG line to appear).
sed -i 's/^server_id = ""$/server_id = "edited-board"  # edited on the board/' "$conf"
grep -q 'edited on the board' "$conf" || fatal "could not edit $conf (server_id line changed?)"
if apt_in_root "$(basename "$deb2")"; then
    pass "upgrade: apt-get install ./$(basename "$deb2"), no conffile prompt"
else
    sed 's/^/    apt: /' "$work/apt.log" | tail -n 30
    fail "upgrade to $(basename "$deb2")"
fi
check "upgrade: version $version-2~upgrade installed" '[ "$(in_root dpkg-query -W -f="\${Version}" stomp-edge)" = "$version-2~upgrade" ]'
check "upgrade: the edited config survived, nothing beside it" \
    'grep -qx "server_id = \"edited-board\"  # edited on the board" "$conf" && [ -z "$(ls "$root/etc/stomp-edge" | grep -v "^stomp-edge.toml$")" ]'
check "upgrade: same user, unit still enabled" '[ "$(in_root id -u stomp-edge)" = "$uid" ] && [ -L "$wants" ]'
serve_healthz "upgraded"
grep -q '"serverId":"edited-board"' <<<"$last_health" && pass "upgraded: the server ran with the edited config (server id edited-board)" \
    || fail "upgraded: /healthz does not say serverId edited-board: the edited config was not used"

# --- remove, then purge -----------------------------------------------------------------------
echo 'STOMP_EDGE_LOG_LEVEL=info' >"$root/etc/stomp-edge/stomp-edge.env"
if in_root apt-get remove -y -q stomp-edge >>"$work/apt.log" 2>&1; then pass "apt-get remove stomp-edge"; else fail "apt-get remove"; fi
check "remove: binary and unit gone; config, env file and user kept" \
    '[ ! -e "$root/usr/bin/stomp-edge" ] && [ ! -e "$unit" ] && grep -q "edited on the board" "$conf" && [ -f "$root/etc/stomp-edge/stomp-edge.env" ] && getent_root passwd stomp-edge'
if in_root apt-get purge -y -q stomp-edge >>"$work/apt.log" 2>&1; then pass "apt-get purge stomp-edge"; else fail "apt-get purge"; fi
check "purge: /etc/stomp-edge gone, user and group gone, enablement gone, dpkg forgot it" \
    '[ ! -e "$root/etc/stomp-edge" ] && ! getent_root passwd stomp-edge && ! getent_root group stomp-edge && [ ! -L "$wants" ] && ! in_root dpkg-query -W stomp-edge >/dev/null 2>&1'
[ "$failed" -eq 0 ] || sed 's/^/    apt: /' "$work/apt.log" | tail -n 40

checks_done
