# shellcheck shell=bash disable=SC2015 # `COND && pass … || fail …`: pass always returns 0
# Shared by the test steps that build a Debian package (50-aarch64, 55-armv6, 95-deb): check one
# .deb as built by scripts/package.sh without installing it. Source it after defining
# `pass MSG` and `fail MSG`, then call `deb_inspect DEB ARCH` (ARCH: amd64, arm64 or armhf).
# Needs dpkg-deb and lintian (`apt_install_missing lintian` from cross.sh installs it).

# The ELF machine field (bytes 18-19) each architecture's binary must carry.
deb_elf_machine() {
    case $1 in
        amd64) echo 3e00 ;;
        arm64) echo b700 ;;
        armhf) echo 2800 ;;
    esac
}

deb_inspect() {
    [ -f "$1" ] || { fail "$2: no package at $1"; return; }
    local dir
    dir=$(mktemp -d)
    deb_inspect_in "$1" "$2" "$dir"
    rm -rf "$dir"
}

deb_inspect_in() { # DEB ARCH DIR: deb_inspect, unpacking into the empty directory DIR
    local deb=$1 arch=$2 dir=$3 field value depends name
    name=$(basename "$deb")
    echo "    $name: $(stat -c %s "$deb") bytes"
    dpkg-deb --info "$deb" >"$dir/info" || { fail "$arch: dpkg-deb --info $name"; return; }
    dpkg-deb --contents "$deb" >"$dir/contents"
    dpkg-deb --extract "$deb" "$dir/root"
    dpkg-deb --control "$deb" "$dir/control"
    sed -n '/^ Package:/,$p' "$dir/info" | sed 's/^/    /'

    for field in Package:stomp-edge Architecture:"$arch" Section:net Priority:optional; do
        value=$(dpkg-deb --field "$deb" "${field%%:*}")
        if [ "$value" = "${field#*:}" ]; then pass "$arch: ${field%%:*} is ${field#*:}"; else fail "$arch: ${field%%:*} is '$value', not ${field#*:}"; fi
    done
    [ -n "$(dpkg-deb --field "$deb" Maintainer)" ] && [ -n "$(dpkg-deb --field "$deb" Description)" ] \
        && pass "$arch: Maintainer and Description set" || fail "$arch: Maintainer or Description missing"
    depends=$(dpkg-deb --field "$deb" Depends)
    case $arch in
        arm64 | armhf)
            # The boards' binaries are static musl: the only dependency is adduser for the
            # service user.
            [ "$depends" = adduser ] && pass "$arch: Depends '$depends' (static binary: no libc)" \
                || fail "$arch: Depends '$depends', want only adduser" ;;
        *)
            # The newest glibc symbol version the binary uses, as dpkg-shlibdeps finds it.
            local want
            want=$(objdump -T "$dir/root/usr/bin/stomp-edge" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' \
                | sed 's/GLIBC_//' | sort -V | tail -n 1)
            if grep -q "libc6 (>= $want)" <<<"$depends" && grep -q adduser <<<"$depends"; then
                pass "$arch: Depends '$depends' (newest glibc symbol: $want)"
            else
                fail "$arch: Depends '$depends', want libc6 (>= $want) and adduser"
            fi ;;
    esac

    grep -Eq '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/stomp-edge$' "$dir/contents" \
        && [ "$(od -An -tx1 -j18 -N2 "$dir/root/usr/bin/stomp-edge" | tr -d ' \n')" = "$(deb_elf_machine "$arch")" ] \
        && pass "$arch: /usr/bin/stomp-edge, 0755 root, an $arch ELF" || fail "$arch: /usr/bin/stomp-edge missing, wrong mode or architecture"
    cmp -s config/stomp-edge.toml "$dir/root/etc/stomp-edge/stomp-edge.toml" \
        && pass "$arch: /etc/stomp-edge/stomp-edge.toml is config/stomp-edge.toml (the compiled-in defaults)" \
        || fail "$arch: /etc/stomp-edge/stomp-edge.toml differs from config/stomp-edge.toml"
    [ "$(cat "$dir/control/conffiles" 2>/dev/null)" = /etc/stomp-edge/stomp-edge.toml ] \
        && pass "$arch: conffiles lists /etc/stomp-edge/stomp-edge.toml" || fail "$arch: conffiles: $(cat "$dir/control/conffiles" 2>&1)"
    local unit
    unit=$(grep -o '\./\(usr/\)\{0,1\}lib/systemd/system/stomp-edge\.service$' "$dir/contents")
    if [ -n "$unit" ] && grep -qx 'ExecStart=/usr/bin/stomp-edge --config /etc/stomp-edge/stomp-edge.toml' "$dir/root/$unit" \
        && grep -qx 'User=stomp-edge' "$dir/root/$unit"; then
        pass "$arch: unit ${unit#.} runs /usr/bin/stomp-edge as User=stomp-edge"
    else
        fail "$arch: unit missing or not naming /usr/bin/stomp-edge and User=stomp-edge"
    fi
    grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' "$dir/root/usr/share/doc/stomp-edge/copyright" \
        && grep -q '^License: MIT' "$dir/root/usr/share/doc/stomp-edge/copyright" \
        && pass "$arch: machine-readable copyright, MIT" || fail "$arch: copyright file missing or not DEP-5 MIT"
    # The debhelper snippets were filled in: enable + start/restart on configure, stop on remove.
    grep -q 'adduser --system' "$dir/control/postinst" && grep -q 'deb-systemd-helper' "$dir/control/postinst" \
        && grep -q '_dh_action=restart' "$dir/control/postinst" && grep -q 'deb-systemd-invoke stop' "$dir/control/prerm" \
        && grep -q 'deluser --system' "$dir/control/postrm" && grep -q 'deb-systemd-helper purge' "$dir/control/postrm" \
        && pass "$arch: maintainer scripts: user, enable, start/restart, stop on remove, purge" \
        || fail "$arch: maintainer scripts lack the user or systemd parts"

    # lintian: no errors (warnings are printed, not failed on).
    lintian --fail-on error --tag-display-limit 0 "$deb" >"$dir/lintian" 2>&1
    local rc=$?
    sed 's/^/    lintian: /' "$dir/lintian"
    if [ "$rc" -eq 0 ] && ! grep -q '^E:' "$dir/lintian"; then
        pass "$arch: lintian reports no errors ($(grep -c '^W:' "$dir/lintian") warnings)"
    else
        fail "$arch: lintian errors (rc $rc)"
    fi
}
