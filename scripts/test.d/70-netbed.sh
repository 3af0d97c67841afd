#!/usr/bin/env bash
# The network-fault bed of issue 20 (tests/netbed/): for each scenario, network namespaces
# se-<pid>-* joined by a bridge, real redis-server/sentinels and two real stomp-edge boards in
# them, @stomp/stompjs clients inside the boards' namespaces, faults made with nftables drop rules,
# NFQUEUE delay/loss (nfq_delay.py), SIGSTOP/kill/restart of Redis and a Sentinel failover; a
# checker asserts no loss, duplicate or reorder and prints a table. Needs root. Installs, when
# missing, Debian's nftables, iptables, iproute2 and libnetfilter-queue-dev, and the hash-pinned
# tests/netbed/requirements.txt into $TEST_VENV. Knobs: NETBED_SCENARIOS=cut10,stall (one or a
# few scenarios), NETBED_LONG_SECONDS (the long cut and the lossy link, default 60).
set -uo pipefail

ROOT="${REPO_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
cd "$ROOT" || exit 1
TAG=70-netbed
VENV="${TEST_VENV:-$ROOT/target/test-venv}"
export STOMP_EDGE_BIN="${STOMP_EDGE_BIN:-$ROOT/target/debug/stomp-edge}"
say() { echo "[$TAG] $*"; }
fatal() { say "FAIL $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || fatal "needs root (network namespaces, nftables)"
[ -x "$STOMP_EDGE_BIN" ] || fatal "no binary at $STOMP_EDGE_BIN (cargo build first)"
command -v redis-server >/dev/null || fatal "redis-server missing (scripts/lib/setup.sh installs it)"

apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in nftables iptables iproute2 libnetfilter-queue-dev gcc; do
    apt_installed "$p" || missing+=("$p")
done
# NetfilterQueue is built from its sdist: the venv's Python needs its C headers.
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    apt_installed python3-dev || missing+=(python3-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || fatal "apt-get update"
    apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" || fatal "apt-get install ${missing[*]}"
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || fatal "python3 -m venv $VENV"
fi
req="$ROOT/tests/netbed/requirements.txt"
if ! "$VENV/bin/python" -c 'import netfilterqueue' 2>/dev/null; then
    say "pip install --require-hashes -r tests/netbed/requirements.txt"
    "$VENV/bin/python" -m pip install -q --require-hashes -r "$req" || fatal "pip install netfilterqueue"
fi

# The bed's clients are @stomp/stompjs over ws from tests/js (setup's `npm ci` installs them).
if [ ! -d "$ROOT/tests/js/node_modules/@stomp/stompjs" ] || [ ! -d "$ROOT/tests/js/node_modules/ws" ]; then
    say "npm ci in tests/js"
    (cd "$ROOT/tests/js" && npm ci --omit=optional --no-audit --no-fund --loglevel=error) || fatal "npm ci in tests/js"
fi

exec "$VENV/bin/python" "$ROOT/tests/netbed/netbed.py" "$@"
