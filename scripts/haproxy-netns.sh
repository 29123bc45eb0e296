#!/usr/bin/env bash
# Proves --proxy-protocol behind a real load balancer: HAProxy (mode tcp) in front of two
# burrowds, one fed `send-proxy` (v1) and one `send-proxy-v2`, each trusting 127.0.0.1,
# HAProxy's address toward them. Clients live in a network namespace of their own.
#
# Two namespaces of its own, joined by a veth pair: the servers' with 10.200.0.1/24 (HAProxy
# listens there, :1080 for the v1 burrowd and :1090 for the v2 one; an echo target on :7000;
# both burrowds' status pages), and the clients' with 10.200.0.2, .3 and .4. The burrowds
# deny `from 10.200.0.3`, allow `to 10.200.0.1`, and allow two sessions per client address.
# Checked, through each: CONNECT works; /sessions and the log name the client's 10.200.0.x
# address (the socket legs stay 127.0.0.1's); the rule refuses .3; the per-address limit
# counts .2's sessions, not the balancer's, so .4 still gets in; a connection from the trusted
# address without a header is refused and counted; HAProxy's health checks (`check` with
# `check-send-proxy`, a SOCKS5 greeting each) keep both servers UP. Logins are required
# (--users), as in docs/operations.md's example.
#
# Needs root, `ip`, python3 and haproxy (installed from Debian with apt-get if missing);
# without them it prints "skipped: ..." and exits 0.
# Usage: scripts/haproxy-netns.sh [path/to/burrowd]
set -euo pipefail

# shellcheck source=scripts/netns-common.sh
source "$(dirname "$0")/netns-common.sh"

if ! command -v haproxy >/dev/null; then
    command -v apt-get >/dev/null || skip "no haproxy, and no apt-get to install it"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends haproxy; } >/dev/null 2>&1 ||
        skip "cannot install haproxy"
fi
haproxy=$(command -v haproxy)

tag="hp$$"
ns="burrowd-$tag"
client_ns="burrowd-${tag}c"
work=$(mktemp -d)
pids=()

cleanup() {
    # HAProxy and python die of the signal, and their status must not end the script.
    for pid in "${pids[@]}"; do
        { kill "$pid" && wait "$pid"; } 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$client_ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$client_ns"
ip -n "$ns" link set lo up
ip -n "$client_ns" link set lo up
ip -n "$ns" link add "${tag}s" type veth peer name "${tag}c" netns "$client_ns" || skip "cannot create a veth pair here"
ip -n "$ns" addr add 10.200.0.1/24 dev "${tag}s"
for address in 10.200.0.2 10.200.0.3 10.200.0.4; do
    ip -n "$client_ns" addr add "$address/24" dev "${tag}c"
done
ip -n "$ns" link set "${tag}s" up
ip -n "$client_ns" link set "${tag}c" up

echo "alice:wonderland" >"$work/users"
for instance in 1 2; do
    ip netns exec "$ns" "$burrowd" --listen "127.0.0.1:108$instance" --proxy-protocol 127.0.0.1 --users "$work/users" \
        --status "10.200.0.1:918$instance" --max-clients-per-ip 2 \
        --deny 'from 10.200.0.3' --allow 'to 10.200.0.1' 2>"$work/burrowd$instance.log" &
    pids+=($!)
done

cat >"$work/haproxy.cfg" <<EOF
global
    stats socket $work/haproxy.sock level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

# As docs/operations.md's "Behind a load balancer" has it: a health check is a SOCKS5 greeting offering
# a login, answered "log in".
listen socks_v1
    bind 10.200.0.1:1080
    option tcp-check
    tcp-check send-binary 050102
    tcp-check expect binary 0502
    server burrowd1 127.0.0.1:1081 send-proxy check check-send-proxy inter 200ms

listen socks_v2
    bind 10.200.0.1:1090
    option tcp-check
    tcp-check send-binary 050102
    tcp-check expect binary 0502
    server burrowd2 127.0.0.1:1082 send-proxy-v2 check check-send-proxy inter 200ms
EOF
ip netns exec "$ns" "$haproxy" -q -db -f "$work/haproxy.cfg" &
pids+=($!)

# The echo target.
cat >"$work/echo.py" <<'PY'
import socket, threading
echo = socket.create_server(("10.200.0.1", 7000))
def serve(conn):
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
while True:
    conn, _ = echo.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
ip netns exec "$ns" python3 "$work/echo.py" &
pids+=($!)

ip netns exec "$client_ns" python3 - "$work/haproxy.sock" <<'PY'
import csv, socket, sys, time

def fail(why):
    sys.exit(f"FAIL: {why}")

def wait_for(what, done, seconds=10):
    deadline = time.time() + seconds
    while not done():
        if time.time() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.1)

def reachable(port):
    try:
        socket.create_connection(("10.200.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False

def haproxy_servers():
    """The burrowd rows of HAProxy's `show stat`, by server name."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sys.argv[1])
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
    return {row["svname"]: row for row in rows if row["svname"].startswith("burrowd")}

def servers_up():
    """Whether HAProxy shows both burrowds UP. A server whose first checks ran before its
    burrowd listened is DOWN until two checks pass, and HAProxy closes the connections it
    cannot place."""
    servers = haproxy_servers()
    return all(servers.get(name, {}).get("status") == "UP" for name in ("burrowd1", "burrowd2"))

def status(instance, page):
    with socket.create_connection(("10.200.0.1", 9180 + instance), timeout=5) as s:
        s.sendall(f"GET {page} HTTP/1.1\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode().split("\r\n\r\n", 1)[1]

def connect(port, source):
    """A SOCKS5 CONNECT to the echo target through HAProxy from `source`; returns the
    socket once the tunnel carries bytes, or None if the proxy closed it."""
    c = socket.create_connection(("10.200.0.1", port), timeout=5, source_address=(source, 0))
    c.sendall(b"\x05\x01\x02")
    if c.recv(2) != b"\x05\x02":
        c.close()
        return None
    c.sendall(b"\x01\x05alice\x0awonderland")
    if c.recv(2) != b"\x01\x00":
        fail(f"login refused for {source}")
    c.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("10.200.0.1") + (7000).to_bytes(2, "big"))
    reply = c.recv(10)
    if len(reply) < 2 or reply[1] != 0:
        fail(f"CONNECT reply {reply!r} from {source}")
    c.sendall(b"ping")
    if c.recv(4) != b"ping":
        fail("the tunnel does not carry bytes")
    return c

wait_for("HAProxy, both burrowds and the target", lambda: all(map(reachable, (1080, 1090, 9181, 9182, 7000))))
wait_for("HAProxy's health checks to find both burrowds UP", servers_up)
for port, instance, version in [(1080, 1, "v1"), (1090, 2, "v2")]:
    held = [connect(port, "10.200.0.2") for _ in range(2)]
    if None in held:
        fail(f"CONNECT through HAProxy ({version})")
    client = held[0].getsockname()
    table = status(instance, "/sessions")
    rows = [line.split(" ") for line in table.splitlines()[1:]]
    carried = [row for row in rows if row[-1].startswith("10.200.0.2:")]
    if len(carried) != 2 or any(not row[2].startswith("127.0.0.1:") for row in carried):
        fail(f"/sessions ({version}) does not show the client's address beside HAProxy's legs:\n{table}")
    print(f"ok: CONNECT through HAProxy ({version}); /sessions shows the client {client[0]} beside the legs")
    if connect(port, "10.200.0.2") is not None:
        fail(f"a third session from 10.200.0.2 got past --max-clients-per-ip 2 ({version})")
    fourth = connect(port, "10.200.0.4")
    if fourth is None:
        fail(f"10.200.0.4 was refused while only 10.200.0.2 is at its limit ({version})")
    print(f"ok: --max-clients-per-ip counts 10.200.0.2, not the balancer: its third is refused, 10.200.0.4 served ({version})")
    if connect(port, "10.200.0.3") is not None:
        fail(f"the rule `deny from 10.200.0.3` let it through ({version})")
    print(f"ok: `deny from 10.200.0.3` refuses that client, `to 10.200.0.1` serves the others ({version})")
    metrics = status(instance, "/metrics")
    for sample in ['burrowd_refusals_total{reason="per_address_limit"} 1', 'burrowd_refusals_total{reason="rule"} 1']:
        if sample not in metrics.splitlines():
            fail(f"{sample} not in /metrics ({version})")
    for c in held + [fourth]:
        c.close()

servers = haproxy_servers()
for name in ("burrowd1", "burrowd2"):
    row = servers.get(name)
    # A check under way shows as "* L7OK": the last result, and one more coming.
    if row is None or row["status"] != "UP" or row["check_status"].lstrip("* ") != "L7OK":
        fail(f"HAProxy's health check of {name}: {row and (row['status'], row['check_status'])}")
print("ok: HAProxy's health checks (check-send-proxy, a SOCKS5 greeting) keep both servers UP")
PY

# From the trusted address itself, without a header: refused, counted and logged.
ip netns exec "$ns" python3 - <<'PY'
import socket, sys
for port in (1081, 1082):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(b"\x05\x01\x00")
    try:
        answer = c.recv(2)
    except ConnectionResetError:
        answer = b""
    if answer != b"":
        sys.exit(f"FAIL: a connection from 127.0.0.1 without a PROXY header was answered on {port}")
    c.close()
print("ok: a connection from the trusted address without a header is closed unanswered")
PY

ip netns exec "$client_ns" python3 - <<'PY'
import socket, sys
for instance in (1, 2):
    with socket.create_connection(("10.200.0.1", 9180 + instance), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if 'burrowd_refusals_total{reason="proxy_header"} 1' not in data.decode().splitlines():
        sys.exit(f"FAIL: burrowd {instance} did not count the headerless connection")
PY

# The log names the client in the session lines, and says why the headerless one went.
for instance in 1 2; do
    log="$work/burrowd$instance.log"
    grep -qE "session [0-9]+ 10\.200\.0\.2:[0-9]+ via 127\.0\.0\.1:[0-9]+ user alice CONNECT 10\.200\.0\.1:7000" "$log" ||
        { echo "FAIL: burrowd $instance's log does not name 10.200.0.2:"; cat "$log"; exit 1; }
    grep -q "no valid PROXY header" "$log" ||
        { echo "FAIL: burrowd $instance's log does not say why the headerless connection was refused:"; cat "$log"; exit 1; }
done
echo "ok: the log names the client's address via HAProxy's, and the refusal of the headerless one"
echo "PASS: PROXY protocol v1 and v2 behind HAProxy"
