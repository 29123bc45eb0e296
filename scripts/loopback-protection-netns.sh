#!/usr/bin/env bash
# Proves the access rules' built-in protection: a client that reaches burrowd from an
# address that is not loopback may not go through it to the host's own loopback services,
# unless a rule's `to` names them; a loopback client may.
#
# In a network namespace of its own: a veth end with 10.99.0.1/24, a TCP echo
# service on 127.0.0.1 only, and two burrowds on 10.99.0.1, one with no rules and one with
# --allow 'to 127.0.0.1' --allow 'to *'. A python SOCKS5 client CONNECTs to the echo
# service from 10.99.0.1 (not loopback) and from 127.0.0.1.
#
# Needs root, `ip` and python3; without them it prints "skipped: ..." and exits 0.
# Usage: scripts/loopback-protection-netns.sh [path/to/burrowd]
set -euo pipefail

# shellcheck source=scripts/netns-common.sh
source "$(dirname "$0")/netns-common.sh"

tag="lp$$"
ns="burrowd-$tag"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$ns" 2>/dev/null || skip "cannot create network namespaces here"
ip -n "$ns" link set lo up
ip -n "$ns" link add "${tag}a" type veth peer name "${tag}b" || skip "cannot create a veth pair here"
ip -n "$ns" addr add 10.99.0.1/24 dev "${tag}a"
ip -n "$ns" link set "${tag}a" up
ip -n "$ns" link set "${tag}b" up

ip netns exec "$ns" "$burrowd" -q -q --listen 10.99.0.1:1080 &
pids+=($!)
ip netns exec "$ns" "$burrowd" -q -q --listen 10.99.0.1:1081 --allow 'to 127.0.0.1' --allow 'to *' &
pids+=($!)

ip netns exec "$ns" python3 - <<'PY'
import socket, sys, threading, time

echo = socket.create_server(("127.0.0.1", 0))
echo_port = echo.getsockname()[1]

def serve():
    while True:
        conn, _ = echo.accept()
        conn.sendall(conn.recv(64))
        conn.close()

threading.Thread(target=serve, daemon=True).start()

def connect_reply(proxy_port, source):
    """The CONNECT reply code for 127.0.0.1:echo through burrowd, from `source`."""
    deadline = time.time() + 10
    while True:
        try:
            c = socket.create_connection(("10.99.0.1", proxy_port), timeout=5, source_address=(source, 0))
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("FAIL: burrowd did not start listening")
            time.sleep(0.1)
    c.sendall(b"\x05\x01\x00")
    assert c.recv(2) == b"\x05\x00", "method choice"
    c.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + echo_port.to_bytes(2, "big"))
    reply = c.recv(10)
    if reply[1] == 0:
        c.sendall(b"ping")
        assert c.recv(4) == b"ping", "the tunnel carries bytes"
    c.close()
    return reply[1]

checks = [
    (1080, "10.99.0.1", 2, "a remote client is refused this host's loopback (reply 2)"),
    (1080, "127.0.0.1", 0, "a loopback client reaches it"),
    (1081, "10.99.0.1", 0, "a rule whose `to` names 127.0.0.1 opens it"),
]
for port, source, want, what in checks:
    got = connect_reply(port, source)
    if got != want:
        sys.exit(f"FAIL: {what}: got reply {got}")
print("PASS: the built-in loopback protection, and a rule that opens it")
PY
