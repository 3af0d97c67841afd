# Shared by the board-build steps in scripts/test.d: install what a cross build needs when it is
# missing. Source it, then call `apt_install_missing PKG...` (only the packages not yet present
# are passed) and `rust_target TARGET`. Both return non-zero on failure; callers decide.

apt_install_missing() {
    [ $# -gt 0 ] || return 0
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "installing $*"
    timeout 600 $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive timeout 900 $sudo apt-get install -y -qq --no-install-recommends "$@"
}

rust_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1" || timeout 600 rustup target add "$1"
}
