#!/usr/bin/env bash
# Proves the access rules' built-in protection: a client that reaches burrowd from an
# address that is not loopback may not go through it to this host's own addresses (its
# loopback in every spelling, and its interfaces' addresses, re-read on SIGHUP), unless a
# rule's `to` names them; a loopback client may.
#
# In a network namespace of its own: a veth end with 10.99.0.1/24, a TCP echo service on
# 0.0.0.0, and three burrowds on 10.99.0.1: one with no rules, one with --allow 'to
# 127.0.0.1' --allow 'to *', one with --allow 'to 10.99.0.1' --allow 'to *'. A python SOCKS5
# client CONNECTs from 10.99.0.1 (not loopback) and from 127.0.0.1 to the echo service by
# 127.0.0.1, by the IPv4-compatible ::127.0.0.1, the IPv4-translated ::ffff:0:127.0.0.1,
# NAT64's 64:ff9b::127.0.0.1 and 64:ff9b::0.0.0.0, and by the interface's 10.99.0.1; then it
# adds 10.99.0.2 to the interface, which is reached until SIGHUP and refused after it.
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
bare=$!
ip netns exec "$ns" "$burrowd" -q -q --listen 10.99.0.1:1081 --allow 'to 127.0.0.1' --allow 'to *' &
pids+=($!)
ip netns exec "$ns" "$burrowd" -q -q --listen 10.99.0.1:1082 --allow 'to 10.99.0.1' --allow 'to *' &
pids+=($!)

BARE_PID=$bare IFACE="${tag}a" ip netns exec "$ns" python3 - <<'PY'
import ipaddress, os, signal, socket, subprocess, sys, threading, time

echo = socket.create_server(("0.0.0.0", 0))
echo_port = echo.getsockname()[1]

def serve():
    while True:
        conn, _ = echo.accept()
        conn.sendall(conn.recv(64))
        conn.close()

threading.Thread(target=serve, daemon=True).start()

def connect_reply(proxy_port, source, host):
    """The CONNECT reply code for host:echo through burrowd, from `source`."""
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
    address = ipaddress.ip_address(host)
    atyp = b"\x01" if address.version == 4 else b"\x04"
    c.sendall(b"\x05\x01\x00" + atyp + address.packed + echo_port.to_bytes(2, "big"))
    reply = c.recv(22)
    if reply[1] == 0:
        c.sendall(b"ping")
        assert c.recv(4) == b"ping", "the tunnel carries bytes"
    c.close()
    return reply[1]

remote, local = "10.99.0.1", "127.0.0.1"
checks = [
    (1080, remote, "127.0.0.1", 2, "a remote client is refused this host's loopback (reply 2)"),
    (1080, local, "127.0.0.1", 0, "a loopback client reaches it"),
    (1081, remote, "127.0.0.1", 0, "a rule whose `to` names 127.0.0.1 opens it"),
    (1080, remote, "::127.0.0.1", 2, "the IPv4-compatible spelling of loopback is refused"),
    (1080, remote, "::ffff:0:127.0.0.1", 2, "the IPv4-translated spelling of loopback is refused"),
    (1080, remote, "64:ff9b::127.0.0.1", 2, "NAT64's spelling of loopback is refused"),
    (1080, remote, "64:ff9b::0.0.0.0", 2, "NAT64's spelling of the unspecified address is refused"),
    (1080, remote, "10.99.0.1", 2, "a remote client is refused this host's interface address"),
    (1080, local, "10.99.0.1", 0, "a loopback client reaches it"),
    (1082, remote, "10.99.0.1", 0, "a rule whose `to` names the interface address opens it"),
]
for port, source, host, want, what in checks:
    got = connect_reply(port, source, host)
    if got != want:
        sys.exit(f"FAIL: {what}: got reply {got}")

# An address added later is shielded once SIGHUP has the addresses read again.
subprocess.run(["ip", "addr", "add", "10.99.0.2/24", "dev", os.environ["IFACE"]], check=True)
if connect_reply(1080, remote, "10.99.0.2") != 0:
    sys.exit("FAIL: an address added after start is shielded before SIGHUP reads it")
os.kill(int(os.environ["BARE_PID"]), signal.SIGHUP)
deadline = time.time() + 10
while connect_reply(1080, remote, "10.99.0.2") != 2:
    if time.time() > deadline:
        sys.exit("FAIL: an interface address added before SIGHUP is not shielded after it")
    time.sleep(0.1)
print("PASS: the built-in protection of this host's addresses, and rules that open it")
PY
