# Sourced by the scripts/*-netns.sh checks: the skip rule they share and the burrowd they
# run. After sourcing, the working directory is the repository and $burrowd the binary's
# absolute path (the script's first argument, else $BURROWD, else target/debug/burrowd,
# built with `cargo build` if missing).

skip() {
    echo "skipped: $*"
    exit 0
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v python3 >/dev/null || skip "no python3"

burrowd=${1:-${BURROWD:-target/debug/burrowd}}
if [ ! -x "$burrowd" ]; then
    cargo build --quiet --bin burrowd
fi
burrowd=$(realpath "$burrowd")
