#!/usr/bin/env python3
"""Time from a peer's connect() to the client reading the second SOCKS5 BIND reply.

Usage: python3 scripts/bind_latency.py PORT   (a burrowd on 127.0.0.1:PORT, no users)

Runs 200 BINDs one after another over loopback, each with a peer that connects as soon as
the first reply names the port, and prints the median, 90th percentile and maximum.
"""
import socket
import statistics
import struct
import sys
import time

ROUNDS = 200


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            sys.exit("proxy closed the connection")
        data += chunk
    return data


def one_bind(proxy):
    with socket.create_connection(proxy, timeout=10) as control:
        control.sendall(b"\x05\x01\x00")
        if read_exact(control, 2) != b"\x05\x00":
            sys.exit("proxy wants a login")
        control.sendall(b"\x05\x02\x00\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
        first = read_exact(control, 10)  # an IPv4 reply: the proxy was reached over IPv4
        if first[1] != 0:
            sys.exit(f"first BIND reply {first[1]}")
        port = struct.unpack("!H", first[8:10])[0]
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            second = read_exact(control, 10)
            elapsed = time.perf_counter() - started
        if second[1] != 0:
            sys.exit(f"second BIND reply {second[1]}")
        return elapsed


def main():
    proxy = ("127.0.0.1", int(sys.argv[1]))
    samples = sorted(one_bind(proxy) for _ in range(ROUNDS))
    ms = [s * 1e3 for s in samples]
    print(f"{ROUNDS} BINDs: peer connect to second reply median {statistics.median(ms):.1f} ms, "
          f"p90 {ms[int(ROUNDS * 0.9) - 1]:.1f} ms, max {ms[-1]:.1f} ms")


main()
