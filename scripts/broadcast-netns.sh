#!/usr/bin/env bash
# Proves that a datagram sent through burrowd's UDP ASSOCIATE to a subnet broadcast
# address reaches a listener on that subnet.
#
# Two network namespaces owned by this script, joined by a veth pair on 10.213.7.0/24
# (a subnet that exists only inside them):
#   proxy ns: burrowd on its own 127.0.0.1, veth 10.213.7.1/24, and the SOCKS client
#   peer ns:  veth 10.213.7.2/24 and a UDP listener on port 5353
# The client asks burrowd for an association and sends to 10.213.7.255:5353; the
# listener must receive the payload, from 10.213.7.1.
#
# Needs root, `ip` and python3; without them it prints "skipped: ..." and exits 0.
# Usage: scripts/broadcast-netns.sh [path/to/burrowd]   (default: target/debug/burrowd,
# built with `cargo build` if missing; $BURROWD also works)
set -euo pipefail

# shellcheck source=scripts/netns-common.sh
source "$(dirname "$0")/netns-common.sh"

# Names unique to this run, so parallel runs do not collide; interface names stay
# within the kernel's 15 characters.
tag="bc$$"
ns_proxy="burrowd-$tag-proxy"
ns_peer="burrowd-$tag-peer"
veth_proxy="${tag}p"
veth_peer="${tag}q"
workdir=$(mktemp -d)
proxy_pid=""
listener_pid=""

cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null && wait "$listener_pid" 2>/dev/null
    # Deleting a namespace also deletes the veth end inside it, and with it its peer.
    ip netns del "$ns_proxy" 2>/dev/null || true
    ip netns del "$ns_peer" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

ip netns add "$ns_proxy" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$ns_peer"
# Both ends are created inside the namespaces, never in the host's own, so a failure
# half-way leaves no interface on the host for cleanup to miss.
ip -n "$ns_proxy" link add "$veth_proxy" type veth peer name "$veth_peer" netns "$ns_peer" ||
    skip "cannot create a veth pair here"
ip -n "$ns_proxy" addr add 10.213.7.1/24 brd + dev "$veth_proxy"
ip -n "$ns_peer" addr add 10.213.7.2/24 brd + dev "$veth_peer"
for ns in "$ns_proxy" "$ns_peer"; do
    ip -n "$ns" link set lo up
done
ip -n "$ns_proxy" link set "$veth_proxy" up
ip -n "$ns_peer" link set "$veth_peer" up

# The listener says when it is bound, then writes "SOURCE_IP PAYLOAD" for the first
# datagram, or gives up after 10 s.
ip netns exec "$ns_peer" python3 - "$workdir" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
s.settimeout(10)
open(sys.argv[1] + "/listening", "w").close()
data, (ip, _) = s.recvfrom(2048)
open(sys.argv[1] + "/received", "w").write(f"{ip} {data.decode()}")
EOF
listener_pid=$!
for _ in $(seq 100); do
    [ -e "$workdir/listening" ] && break
    sleep 0.1
done
[ -e "$workdir/listening" ] || { echo "FAIL: the listener did not start" >&2; exit 1; }

ip netns exec "$ns_proxy" "$burrowd" --listen 127.0.0.1:1080 &
proxy_pid=$!

# The client: waits for burrowd, opens the association, sends to the broadcast address,
# and keeps the control connection open until the listener has had time to hear it.
payload="burrowd broadcast $$"
ip netns exec "$ns_proxy" python3 - "$payload" <<'EOF'
import socket, struct, sys, time
payload = sys.argv[1].encode()
deadline = time.time() + 10
while True:
    try:
        control = socket.create_connection(("127.0.0.1", 1080), timeout=2)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("burrowd did not start listening")
        time.sleep(0.1)
control.settimeout(5)
control.sendall(b"\x05\x01\x00")
assert control.recv(2) == b"\x05\x00", "method choice"
control.sendall(b"\x05\x03\x00\x01" + bytes(4) + bytes(2))  # UDP ASSOCIATE, from 0.0.0.0:0
reply = control.recv(10)
assert reply[:2] == b"\x05\x00" and reply[3] == 1, f"UDP ASSOCIATE reply {reply!r}"
relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
header = b"\x00\x00\x00\x01" + socket.inet_aton("10.213.7.255") + struct.pack("!H", 5353)
udp.sendto(header + payload, relay)
time.sleep(1)
control.close()
EOF

wait "$listener_pid" || true
listener_pid=""
expected="10.213.7.1 $payload"
received=$(cat "$workdir/received" 2>/dev/null || true)
if [ "$received" = "$expected" ]; then
    echo "PASS: broadcast to 10.213.7.255 through burrowd reached the listener ($received)"
else
    echo "FAIL: listener got '${received:-nothing}', expected '$expected'" >&2
    exit 1
fi
