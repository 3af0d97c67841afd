#!/usr/bin/env bash
# Installs what the test suites need, only when it is missing; fast and silent when all is present.
# Called by scripts/test.sh as its first step; can be run alone: `bash scripts/lib/setup.sh`.
#   Debian: redis-server (binary only: tests start their own on free ports), chromium,
#           qemu-user-static, lintian, dpkg-dev, python3-venv if needed
#   Rust:   rustfmt, clippy and rust-src components (std is built from source for the boards'
#           static binaries), cargo-fuzz (from crates.io, for the bounded fuzz step), cargo-deb
#           (crates.io, for the packages); the boards' linker, Zig, comes from PyPI when
#           scripts/package.sh first needs it (scripts/lib/cross.sh)
#   Node:   tests/js/node_modules from the committed package-lock.json (npm ci)
#   Python: target/test-venv with tests/py/requirements.txt (hash-pinned)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
        say "need root for: $*"; return 1
    fi
}

# --- Debian packages --------------------------------------------------------------------------
apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_debian_packages() {
    local want=(redis-server chromium qemu-user-static lintian dpkg-dev nginx openssl)
    # The venv is made with the python3 on PATH; Debian's own python3 needs python3-venv for that.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then want+=(python3-venv); fi
    local missing=() p
    for p in "${want[@]}"; do apt_installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0

    say "installing Debian packages: ${missing[*]}"
    # Keep the packages' services (a system redis on 6379) from starting: the tests start their own.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
    fi
    local rc=0
    as_root apt-get update -qq || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" || rc=$?
    fi
    [ "$made_policy" -eq 1 ] && as_root rm -f "$policy"
    # On a host that runs systemd, policy-rc.d is not consulted by every path: stop it there too.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null && apt_installed redis-server; then
        as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
    # Likewise nginx (tests/js/nginx.test.mjs runs its own in the foreground, not the service).
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null && apt_installed nginx; then
        as_root systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
    return "$rc"
}

# --- Rust toolchain pieces --------------------------------------------------------------------
install_rust_pieces() {
    if ! command -v rustup >/dev/null; then
        say "rustup not found: skipping the rustfmt/clippy/rust-src checks"
        return 0
    fi
    local installed c
    installed="$(rustup component list --installed 2>/dev/null)"
    for c in rustfmt clippy rust-src; do
        if ! grep -q "^$c" <<<"$installed"; then
            say "adding rustup component $c"
            rustup component add "$c"
        fi
    done
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "cargo install cargo-fuzz (crates.io)"
        cargo install --locked cargo-fuzz
    fi
    if ! cargo deb --version >/dev/null 2>&1; then
        say "cargo install cargo-deb (crates.io)"
        cargo install --locked cargo-deb
    fi
}

# --- Node packages ----------------------------------------------------------------------------
install_node_packages() {
    local dir="$ROOT/tests/js" stamp="$ROOT/tests/js/node_modules/.package-lock.json"
    if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] && [ ! "$dir/package.json" -nt "$stamp" ]; then
        return 0
    fi
    say "npm ci in tests/js"
    # Optional dependencies are only stompjs 2.3.3's unused `websocket` transport (native addons).
    (cd "$dir" && npm ci --omit=optional --no-audit --no-fund --loglevel=error)
    touch "$stamp"
}

# --- Python venv ------------------------------------------------------------------------------
install_python_venv() {
    local venv="$ROOT/target/test-venv" req="$ROOT/tests/py/requirements.txt"
    local stamp="$venv/.requirements.sha256" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    say "pip install --require-hashes -r tests/py/requirements.txt"
    "$venv/bin/python" -m pip install -q --require-hashes -r "$req"
    echo "$want" >"$stamp"
}

failed=()
for part in install_debian_packages install_rust_pieces install_node_packages install_python_venv; do
    # Each part runs in its own background subshell so `set -e` holds inside it (bash ignores -e in
    # a subshell tested by `if`); one failure does not stop the rest.
    ("$part") &
    if ! wait $!; then
        say "FAILED: $part"
        failed+=("$part")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    say "failed: ${failed[*]}"
    exit 1
fi
say "everything present"
