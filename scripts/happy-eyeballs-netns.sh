#!/usr/bin/env bash
# Proves that a name whose first address is a black hole costs one Happy Eyeballs attempt
# delay (250 ms), not a whole --connect-timeout: burrowd starts the next address beside
# the stalled one and takes whichever connects first.
#
# Everything runs in one network namespace owned by this script: one end of a veth pair
# holds 2001:db8::1/64, and 2001:db8::2 has a fixed neighbour entry there with a MAC address
# no interface has, so every packet to it leaves by the veth and is dropped at its other
# end, unanswered (no neighbour discovery either, so it never turns into an error); the name
# he.test resolves (through /etc/netns/<ns>/hosts, which `ip netns exec` mounts over
# /etc/hosts) to 2001:db8::2 first and 127.0.0.1 second; a TCP echo server listens on
# 127.0.0.1; burrowd runs with --connect-timeout 10s. A python client CONNECTs to he.test
# through burrowd and times the reply. No packet leaves the namespace.
#
# Needs root, `ip` and python3; without them it prints "skipped: ..." and exits 0.
# Usage: scripts/happy-eyeballs-netns.sh [path/to/burrowd]   (default: target/debug/burrowd,
# built with `cargo build` if missing; $BURROWD also works)
set -euo pipefail

# shellcheck source=scripts/netns-common.sh
source "$(dirname "$0")/netns-common.sh"

# Names unique to this run; interface names stay within the kernel's 15 characters.
tag="he$$"
ns="burrowd-$tag"
veth="${tag}a"
etc="/etc/netns/$ns"
proxy_pid=""
log=$(mktemp)

cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    # Deleting the namespace deletes both veth ends, which live only inside it.
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$etc" "$log"
}
trap cleanup EXIT

ip netns add "$ns" 2>/dev/null || skip "cannot create network namespaces here"
ip -n "$ns" link set lo up
ip -n "$ns" link add "$veth" type veth peer name "${tag}b" 2>/dev/null || skip "cannot create a veth pair here"
ip -n "$ns" link set "$veth" up
ip -n "$ns" link set "${tag}b" up
# nodad: usable at once, without waiting out duplicate address detection.
ip -n "$ns" addr add 2001:db8::1/64 dev "$veth" nodad
ip -n "$ns" -6 neigh add 2001:db8::2 lladdr 02:00:00:00:00:02 dev "$veth" nud permanent
mkdir -p "$etc"
printf '2001:db8::2 he.test\n127.0.0.1 he.test\n' >"$etc/hosts"

ip netns exec "$ns" "$burrowd" --listen 127.0.0.1:1080 --connect-timeout 10s 2>"$log" &
proxy_pid=$!

ip netns exec "$ns" python3 - <<'PY'
import socket, sys, threading, time

order = [info[4][0] for info in socket.getaddrinfo("he.test", 1, type=socket.SOCK_STREAM)]
if order[:2] != ["2001:db8::2", "127.0.0.1"]:
    sys.exit(f"FAIL: he.test resolves to {order}, not the black hole first")

# The premise: the first address swallows a SYN without an answer.
hole = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
hole.settimeout(0.5)
try:
    hole.connect(("2001:db8::2", 9))
    sys.exit("FAIL: 2001:db8::2 answered")
except socket.timeout:
    pass
except OSError as e:
    sys.exit(f"FAIL: 2001:db8::2 is not a black hole: {e}")

echo = socket.socket()
echo.bind(("127.0.0.1", 0))
echo.listen(1)
def serve():
    peer, _ = echo.accept()
    peer.sendall(peer.recv(64))
threading.Thread(target=serve, daemon=True).start()

deadline = time.time() + 10
while True:
    try:
        client = socket.create_connection(("127.0.0.1", 1080), timeout=10)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("FAIL: burrowd did not start listening")
        time.sleep(0.05)
client.sendall(b"\x05\x01\x00")
assert client.recv(2) == b"\x05\x00", "method choice"
port = echo.getsockname()[1]
started = time.monotonic()
client.sendall(bytes([5, 1, 0, 3, 7]) + b"he.test" + port.to_bytes(2, "big"))
reply = client.recv(10)
took = time.monotonic() - started
if reply[1] != 0:
    sys.exit(f"FAIL: CONNECT he.test got reply {reply[1]} after {took:.3f} s")
client.sendall(b"ping")
assert client.recv(4) == b"ping", "echo through the tunnel"
if not 0.25 <= took < 1.0:
    sys.exit(f"FAIL: connected after {took:.3f} s, not one attempt delay (0.25 s)")
print(f"connected after {took:.3f} s")
PY

kill "$proxy_pid" && wait "$proxy_pid" 2>/dev/null || true
proxy_pid=""
grep -q "he.test:[0-9]* (127.0.0.1:[0-9]*)" "$log" || {
    echo "FAIL: the session line does not name 127.0.0.1 as reached:"
    cat "$log"
    exit 1
}
echo "PASS: he.test's black-holed 2001:db8::2 cost one attempt delay; 127.0.0.1 was reached"
