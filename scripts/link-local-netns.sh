#!/usr/bin/env bash
# Proves that BIND and UDP ASSOCIATE work for a client that reached burrowd on a
# link-local IPv6 address (fe80::/10), which binds only together with its interface (the
# scope id): burrowd must bind its new sockets on the control connection's whole socket
# address, scope included, or the request fails with reply 1.
#
# Everything runs in one network namespace owned by this script: a veth pair with
# fe80::1 on one end, burrowd listening on [::]:1080, and a python SOCKS5 client that
# connects to fe80::1%<veth>. No packet leaves the namespace.
#
# Needs root, `ip` and python3; without them it prints "skipped: ..." and exits 0.
# Usage: scripts/link-local-netns.sh [path/to/burrowd]   (default: target/debug/burrowd,
# built with `cargo build` if missing; $BURROWD also works)
set -euo pipefail

# shellcheck source=scripts/netns-common.sh
source "$(dirname "$0")/netns-common.sh"

# Names unique to this run; interface names stay within the kernel's 15 characters.
tag="ll$$"
ns="burrowd-$tag"
veth="${tag}a"
proxy_pid=""

cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    # Deleting the namespace deletes both veth ends, which live only inside it.
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$ns" 2>/dev/null || skip "cannot create network namespaces here"
ip -n "$ns" link set lo up
ip -n "$ns" link add "$veth" type veth peer name "${tag}b" || skip "cannot create a veth pair here"
ip -n "$ns" link set "$veth" up
ip -n "$ns" link set "${tag}b" up
# nodad: usable at once, without waiting out duplicate address detection.
ip -n "$ns" addr add fe80::1/64 dev "$veth" nodad

# The client comes from fe80::1, not loopback, its UDP echo target is ::1 and its BIND peer
# comes from fe80::1: the rules must open this host's loopback and interface address to it,
# which the built-in protection otherwise refuses.
ip netns exec "$ns" "$burrowd" -q -q --listen '[::]:1080' --allow 'to ::1' --allow 'to fe80::1' --allow 'to *' &
proxy_pid=$!

ip netns exec "$ns" python3 - "fe80::1%$veth" <<'PY'
import socket, sys, time

host = sys.argv[1]
deadline = time.time() + 10

def control():
    while True:
        try:
            c = socket.create_connection((host, 1080), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("FAIL: burrowd did not start listening")
            time.sleep(0.1)
    c.sendall(b"\x05\x01\x00")
    assert c.recv(2) == b"\x05\x00", "method choice"
    return c

def request(command, name):
    c = control()
    c.sendall(bytes([5, command, 0, 4]) + bytes(16) + bytes(2))  # DST [::]:0
    reply = c.recv(22)
    code, port = reply[1], int.from_bytes(reply[-2:], "big")
    if code != 0 or port == 0:
        sys.exit(f"FAIL: {name} over link-local got reply {code} (bound port {port})")
    return c, port

bind_control, bind_port = request(2, "BIND")
peer = socket.create_connection((host, bind_port), timeout=5)
second = bind_control.recv(22)
assert second[1] == 0, f"second BIND reply {second[1]}"
peer.sendall(b"peer to client")
assert bind_control.recv(64) == b"peer to client", "BIND relays"

udp_control, relay_port = request(3, "UDP ASSOCIATE")
echo = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
echo.bind(("::1", 0))
client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
client.settimeout(5)
header = b"\x00\x00\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1") + echo.getsockname()[1].to_bytes(2, "big")
client.sendto(header + b"hello", (host, relay_port))
echo.settimeout(5)
data, source = echo.recvfrom(64)
assert data == b"hello", f"target got {data!r}"
print("PASS: BIND and UDP ASSOCIATE over link-local fe80::1 with its scope")
PY
