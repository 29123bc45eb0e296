#!/usr/bin/env bash
# Proves --bind-out and --interface on a host with several addresses and two interfaces:
# targets that record their peer's address see the source each setting chose, for
# CONNECT, a chained CONNECT, BIND (the address in the first reply) and UDP ASSOCIATE; with
# one family given a target of the other is refused (reply 3); `same` gives each listener
# its own egress; --interface takes a second interface whose route differs; an address or
# interface that goes away at run time gets reply 1 and a log line, never the default route;
# a burrowd whose listener's address went away still stops on SIGTERM.
#
# Two network namespaces owned by this script, joined by two veth pairs:
#   proxy ns   boA: 10.201.1.1, 10.201.1.2, 10.201.1.3, fd00:201:1::1, fd00:201:1::2
#              boB: 10.201.2.1
#              route to the targets (10.201.9.0/24, fd00:201:9::/64) via boA, and a
#              second one via boB with a higher metric, which only a socket bound to boB takes
#   target ns  the other ends (10.201.1.100, fd00:201:1::100; 10.201.2.100) and the
#              targets on its loopback: 10.201.9.9 and fd00:201:9::9 port 7000 answer TCP
#              and UDP with the peer's address; 10.201.9.9:7001 connects back, from
#              10.201.9.9, to the HOST PORT it is sent (a BIND peer); a second burrowd on
#              10.201.1.100:1080 with --bind-out 10.201.9.10 is the upstream hop.
# target.test resolves (through /etc/netns/<ns>/hosts, which `ip netns exec` mounts over
# /etc/hosts) to both 10.201.9.9 and fd00:201:9::9. No packet leaves the namespaces.
#
# Needs root, `ip` and python3; without them it prints "skipped: ..." and exits 0.
# Usage: scripts/bind-out-netns.sh [path/to/burrowd]   (default: target/debug/burrowd,
# built with `cargo build` if missing; $BURROWD also works)
set -euo pipefail

# shellcheck source=scripts/netns-common.sh
source "$(dirname "$0")/netns-common.sh"

# Names unique to this run; interface names stay within the kernel's 15 characters.
tag="bo$$"
ns="burrowd-$tag"
tns="burrowd-${tag}t"
etc="/etc/netns/$ns"
work=$(mktemp -d)

# Stops everything this script started: it all runs in its two namespaces. Each process
# there is signalled itself, since a python3 behind a shim (pyenv) may not pass a signal on.
stop_all() {
    local n
    for n in "$ns" "$tns"; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    wait
}

cleanup() {
    stop_all
    # Deleting a namespace deletes the veth ends in it, and so their peers.
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$tns" 2>/dev/null || true
    rm -rf "$etc" "$work"
}
trap cleanup EXIT

ip netns add "$ns" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$tns"
for n in "$ns" "$tns"; do ip -n "$n" link set lo up; done
ip -n "$ns" link add "${tag}A" type veth peer name "${tag}At" netns "$tns" 2>/dev/null ||
    skip "cannot create a veth pair here"
ip -n "$ns" link add "${tag}B" type veth peer name "${tag}Bt" netns "$tns"
for dev in "${tag}A" "${tag}B"; do
    ip -n "$ns" link set "$dev" up
    ip -n "$tns" link set "${dev}t" up
done
# nodad: usable at once, without waiting out duplicate address detection.
ip -n "$ns" addr add 10.201.1.1/24 dev "${tag}A"
ip -n "$ns" addr add 10.201.1.2/24 dev "${tag}A"
ip -n "$ns" addr add 10.201.1.3/24 dev "${tag}A"
ip -n "$ns" addr add fd00:201:1::1/64 dev "${tag}A" nodad
ip -n "$ns" addr add fd00:201:1::2/64 dev "${tag}A" nodad
ip -n "$ns" addr add 10.201.2.1/24 dev "${tag}B"
ip -n "$tns" addr add 10.201.1.100/24 dev "${tag}At"
ip -n "$tns" addr add fd00:201:1::100/64 dev "${tag}At" nodad
ip -n "$tns" addr add 10.201.2.100/24 dev "${tag}Bt"
for addr in 10.201.9.9/32 10.201.9.10/32; do ip -n "$tns" addr add "$addr" dev lo; done
ip -n "$tns" addr add fd00:201:9::9/128 dev lo nodad
ip -n "$ns" route add 10.201.9.0/24 via 10.201.1.100 dev "${tag}A"
ip -n "$ns" route add 10.201.9.0/24 via 10.201.2.100 dev "${tag}B" metric 100
ip -n "$ns" -6 route add fd00:201:9::/64 via fd00:201:1::100 dev "${tag}A"
# Replies from the targets come back by boB to a socket bound to it, though the main route
# to them is by boA: strict reverse-path filtering would drop them.
ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 "net.ipv4.conf.${tag}B.rp_filter=0"
mkdir -p "$etc"
printf '10.201.9.9 target.test\nfd00:201:9::9 target.test\n' >"$etc/hosts"

cat >"$work/targets.py" <<'PY'
import socket, threading

def reporter_tcp(host):
    server = socket.create_server((host, 7000), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    while True:
        conn, peer = server.accept()
        conn.sendall(peer[0].encode())
        conn.close()

def reporter_udp(host):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 7000))
    while True:
        _, peer = sock.recvfrom(64)
        sock.sendto(peer[0].encode(), peer)

def connect_back():
    """Reads HOST PORT, connects there from 10.201.9.9 and says hello: a BIND's peer."""
    server = socket.create_server(("10.201.9.9", 7001))
    while True:
        conn, _ = server.accept()
        host, port = conn.recv(64).decode().split()
        try:
            peer = socket.create_connection((host, int(port)), timeout=5, source_address=("10.201.9.9", 0))
            peer.sendall(b"hello from the peer")
            peer.close()
            conn.sendall(b"ok")
        except OSError as e:
            conn.sendall(str(e).encode())
        conn.close()

for host in ["10.201.9.9", "fd00:201:9::9"]:
    threading.Thread(target=reporter_tcp, args=(host,), daemon=True).start()
    threading.Thread(target=reporter_udp, args=(host,), daemon=True).start()
connect_back()
PY
ip netns exec "$tns" python3 "$work/targets.py" &

# The upstream hop, in the targets' namespace: the targets are its own addresses, which a
# client from another host reaches only where a rule names one.
ip netns exec "$tns" "$burrowd" --listen 10.201.1.100:1080 --bind-out 10.201.9.10 --allow 'to 10.201.9.9' \
    2>"$work/hop.log" &
# Flags for the whole process, and a service of its own that gives IPv6 only.
ip netns exec "$ns" "$burrowd" --listen 127.0.0.1:1080 --bind-out 10.201.1.2 \
    -L 'socks://127.0.0.1:1081?bind-out=fd00:201:1::2' 2>"$work/flags.log" &
# One egress per ingress, and a service bound to the second interface.
ip netns exec "$ns" "$burrowd" -L 'socks://10.201.1.1:1080?bind-out=same' -L 'socks://10.201.1.2:1080?bind-out=same' \
    -L 'socks://127.0.0.1:1082?interface='"${tag}B" 2>"$work/services.log" &
# A chain to the hop, leaving from 10.201.1.2.
ip netns exec "$ns" "$burrowd" --listen 127.0.0.1:1090 --bind-out 10.201.1.2 -F socks5://10.201.1.100:1080 \
    2>"$work/chain.log" &

# An address to take away at run time, and a listener on it: one whose address is gone
# cannot be woken to stop by a connection to it, and the stop must not wait for it.
ip netns exec "$ns" "$burrowd" --listen 127.0.0.1:1083 --bind-out 10.201.1.3 2>"$work/vanish.log" &
ip netns exec "$ns" "$burrowd" --listen 10.201.1.3:1084 2>"$work/orphan.log" &
orphan=$!

# Start-up errors: an address this host lacks, an interface it lacks.
for flags in "--bind-out 10.201.1.77" "--interface nosuchif0"; do
    # shellcheck disable=SC2086 # the flag and its value are two words
    if ip netns exec "$ns" "$burrowd" --listen 127.0.0.1:1099 $flags 2>"$work/start.log"; then
        echo "FAIL: burrowd started with $flags"
        exit 1
    fi
    grep -q "^burrowd: 127.0.0.1:1099, .*cannot bind to" "$work/start.log" || {
        echo "FAIL: no start-up error line for $flags:"
        cat "$work/start.log"
        exit 1
    }
done

export BOA="${tag}A" BOB="${tag}B"
ip netns exec "$ns" python3 - <<'PY' || { tail -n 5 "$work"/*.log; exit 1; }
import os, socket, subprocess, sys, time

def fail(why):
    sys.exit(f"FAIL: {why}")

def wait_listening(host, port):
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                fail(f"nothing listens on {host}:{port}")
            time.sleep(0.05)

def addr_bytes(host, port):
    try:
        return b"\x01" + socket.inet_pton(socket.AF_INET, host) + port.to_bytes(2, "big")
    except OSError:
        pass
    try:
        return b"\x04" + socket.inet_pton(socket.AF_INET6, host) + port.to_bytes(2, "big")
    except OSError:
        return b"\x03" + bytes([len(host)]) + host.encode() + port.to_bytes(2, "big")

def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            fail(f"closed after {data!r}")
        data += chunk
    return data

def read_reply(sock):
    head = recv_exact(sock, 4)
    kind = head[3]
    if kind == 1:
        host = socket.inet_ntop(socket.AF_INET, recv_exact(sock, 4))
    elif kind == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(sock, 16))
    else:
        host = recv_exact(sock, recv_exact(sock, 1)[0]).decode()
    port = int.from_bytes(recv_exact(sock, 2), "big")
    return head[1], host, port

def request(proxy, command, host, port):
    """A SOCKS5 request through `proxy`; returns the socket and the first reply."""
    sock = socket.create_connection(proxy, timeout=10)
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        fail("method choice")
    sock.sendall(bytes([5, command, 0]) + addr_bytes(host, port))
    return (sock,) + read_reply(sock)

def read_all(sock):
    data = b""
    while chunk := sock.recv(64):
        data += chunk
    return data.decode()

def connect_sees(proxy, host, port=7000):
    """What the reporter says of a CONNECT through `proxy`, and the reply's address."""
    sock, code, bound, _ = request(proxy, 1, host, port)
    if code != 0:
        fail(f"CONNECT {host} through {proxy} got reply {code}")
    return read_all(sock), bound

def connect_code(proxy, host, port=7000):
    return request(proxy, 1, host, port)[1]

def bind_first_reply(proxy, peer):
    """BIND naming `peer`; the peer connects back to the address in the first reply.
    Returns that address."""
    sock, code, bound, port = request(proxy, 2, peer, 0)
    if code != 0:
        fail(f"BIND through {proxy} got reply {code}")
    back = socket.create_connection(("10.201.9.9", 7001), timeout=10)
    back.sendall(f"{bound} {port}".encode())
    answer = read_all(back)
    if answer != "ok":
        fail(f"the peer could not reach {bound}:{port}: {answer}")
    code, who, _ = read_reply(sock)
    if code != 0 or who != peer or read_all(sock) != "hello from the peer":
        fail(f"second BIND reply {code} from {who}")
    return bound

def udp_sees(proxy, host, expect_reply=True):
    control, code, relay, relay_port = request(proxy, 3, "0.0.0.0", 0)
    if code != 0:
        fail(f"UDP ASSOCIATE through {proxy} got reply {code}")
    client = socket.socket(socket.AF_INET6 if ":" in relay else socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(1.0 if not expect_reply else 10)
    client.sendto(b"\x00\x00\x00" + addr_bytes(host, 7000) + b"who am i", (relay, relay_port))
    try:
        data, _ = client.recvfrom(512)
    except socket.timeout:
        return None
    finally:
        control.close()
    header = 4 + (4 if data[3] == 1 else 16) + 2
    return data[header:].decode()

for host, port in [("10.201.1.100", 1080), ("127.0.0.1", 1080), ("127.0.0.1", 1081), ("10.201.1.1", 1080),
                   ("10.201.1.2", 1080), ("127.0.0.1", 1082), ("127.0.0.1", 1083), ("127.0.0.1", 1090),
                   ("10.201.1.3", 1084), ("10.201.9.9", 7000), ("fd00:201:9::9", 7000)]:
    wait_listening(host, port)

# The premise: with no setting, this host reaches the targets from 10.201.1.1, by boA.
plain = socket.create_connection(("10.201.9.9", 7000), timeout=10)
if read_all(plain) != "10.201.1.1":
    fail("the default route is not by boA from 10.201.1.1")

flags_v4, flags_v6 = ("127.0.0.1", 1080), ("127.0.0.1", 1081)
checks = {
    "CONNECT --bind-out 10.201.1.2": (connect_sees(flags_v4, "10.201.9.9"), ("10.201.1.2", "10.201.1.2")),
    "CONNECT ?bind-out=fd00:201:1::2": (connect_sees(flags_v6, "fd00:201:9::9"), ("fd00:201:1::2", "fd00:201:1::2")),
    "CONNECT target.test, IPv4 only": (connect_sees(flags_v4, "target.test")[0], "10.201.1.2"),
    "CONNECT target.test, IPv6 only": (connect_sees(flags_v6, "target.test")[0], "fd00:201:1::2"),
    "CONNECT IPv6 target, IPv4 only": (connect_code(flags_v4, "fd00:201:9::9"), 3),
    "CONNECT IPv4 target, IPv6 only": (connect_code(flags_v6, "10.201.9.9"), 3),
    "BIND --bind-out 10.201.1.2": (bind_first_reply(flags_v4, "10.201.9.9"), "10.201.1.2"),
    "UDP --bind-out 10.201.1.2": (udp_sees(flags_v4, "10.201.9.9"), "10.201.1.2"),
    "UDP ?bind-out=fd00:201:1::2": (udp_sees(flags_v6, "fd00:201:9::9"), "fd00:201:1::2"),
    "UDP IPv6 target, IPv4 only": (udp_sees(flags_v4, "fd00:201:9::9", expect_reply=False), None),
    "CONNECT same, via 10.201.1.1": (connect_sees(("10.201.1.1", 1080), "10.201.9.9")[0], "10.201.1.1"),
    "CONNECT same, via 10.201.1.2": (connect_sees(("10.201.1.2", 1080), "10.201.9.9")[0], "10.201.1.2"),
    "BIND same, via 10.201.1.2": (bind_first_reply(("10.201.1.2", 1080), "10.201.9.9"), "10.201.1.2"),
    "UDP same, via 10.201.1.2": (udp_sees(("10.201.1.2", 1080), "10.201.9.9"), "10.201.1.2"),
    "CONNECT ?interface=boB": (connect_sees(("127.0.0.1", 1082), "10.201.9.9")[0], "10.201.2.1"),
    "BIND ?interface=boB": (bind_first_reply(("127.0.0.1", 1082), "10.201.9.9"), "10.201.2.1"),
    "UDP ?interface=boB": (udp_sees(("127.0.0.1", 1082), "10.201.9.9"), "10.201.2.1"),
    "chained CONNECT, each hop's --bind-out": (connect_sees(("127.0.0.1", 1090), "10.201.9.9"), ("10.201.9.10", "10.201.9.10")),
}
for name, (seen, wanted) in checks.items():
    if seen != wanted:
        fail(f"{name}: saw {seen}, wanted {wanted}")
    print(f"ok: {name}: {seen}")

# Run time: the address and the interface go away; the sessions fail (reply 1), none
# falls back to the default route.
boa, bob = os.environ["BOA"], os.environ["BOB"]
if connect_sees(("127.0.0.1", 1083), "10.201.9.9")[0] != "10.201.1.3":
    fail("--bind-out 10.201.1.3 not used before it went away")
subprocess.run(["ip", "addr", "del", "10.201.1.3/24", "dev", boa], check=True)
code = connect_code(("127.0.0.1", 1083), "10.201.9.9")
if code != 1:
    fail(f"CONNECT from a vanished --bind-out address got reply {code}, not 1")
subprocess.run(["ip", "link", "del", bob], check=True)
code = connect_code(("127.0.0.1", 1082), "10.201.9.9")
if code != 1:
    fail(f"CONNECT bound to a vanished interface got reply {code}, not 1")
print("ok: a vanished address and a vanished interface get reply 1")
PY

# SIGTERM to the burrowd whose listener's address is gone: it stops (within the 1 s wake
# attempt and its drain), rather than waiting for ever on an accept loop nothing can wake.
kill -TERM "$orphan"
(sleep 10 && kill -KILL "$orphan" 2>/dev/null) &
watchdog=$!
status=0
wait "$orphan" || status=$?
kill "$watchdog" 2>/dev/null || true
if ((status != 0)) || ! grep -q "cannot wake the accept loop of 10.201.1.3:1084" "$work/orphan.log"; then
    echo "FAIL: burrowd with a vanished listener address did not stop on SIGTERM (status $status):"
    cat "$work/orphan.log"
    exit 1
fi
echo "ok: a listener whose address is gone does not hold up the stop"

stop_all
# The hop saw the chain come from 10.201.1.2; each run-time failure left one line.
grep -q "session [0-9]* 10.201.1.2:[0-9]* CONNECT 10.201.9.9:7000" "$work/hop.log" || {
    echo "FAIL: the hop's log does not show the chain coming from 10.201.1.2:"
    cat "$work/hop.log"
    exit 1
}
grep -q "reply 1 (general failure): .*cannot bind to source address 10.201.1.3" "$work/vanish.log" || {
    echo "FAIL: no log line for the vanished address:"
    cat "$work/vanish.log"
    exit 1
}
grep -q "reply 1 (general failure): .*cannot bind to interface ${tag}B" "$work/services.log" || {
    echo "FAIL: no log line for the vanished interface:"
    cat "$work/services.log"
    exit 1
}
echo "PASS: --bind-out, same and --interface chose every outbound source; the other family was refused"
