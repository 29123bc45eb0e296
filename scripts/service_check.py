#!/usr/bin/python3
"""Runs burrowd confined the way scripts/burrowd.service confines it, and checks that every
kind of session works there.

Usage: service_check.py BURROWD UNIT        (as root; scripts/service-check.sh runs it)

Without systemd as PID 1 there is no `systemd-run` to start the unit itself, so this applies
the unit's own settings by other means, read from UNIT so that they cannot drift apart:

- SystemCallFilter= (expanded with `systemd-analyze syscall-filter`), SystemCallArchitectures=
  native, and RestrictAddressFamilies= as a seccomp filter (python3-seccomp), loaded just
  before burrowd is executed. A system call outside the filter kills burrowd (SIGSYS), as
  systemd's default action does; another socket family gets EAFNOSUPPORT, as with systemd.
- DynamicUser= as an unprivileged user and group number of the range systemd allocates
  from, SupplementaryGroups=burrowd as a group number that owns the config directory and
  files (0750, 0640), CapabilityBoundingSet= and AmbientCapabilities= as the only
  capability, NoNewPrivileges= (setpriv, util-linux).
- LimitNOFILE= as the hard limit (or this host's, if lower and this process may not raise
  it), with a soft limit of 1024, so that burrowd's raising of its soft limit runs under
  the filter too (prlimit).

Not applied: the mount and kernel protections (ProtectSystem=, PrivateTmp=, ...), which
need a mount namespace set up as systemd does; burrowd writes no file, so they restrict
nothing it does.

Then it serves CONNECT by address and by name, BIND, UDP ASSOCIATE, tcp:// and udp://
forwarding, a SIGHUP reload of the users file and a SIGTERM drain, once with each --relay
mode, on a port below 1024 on 127.0.0.1. A control run with `mincore` left out of the
filter must be killed by it, which shows the filter is in force.

Prints `PASS name` or `FAIL name: reason` per check, then `N passed, N failed`; exits 1 on
any failure. NETWORK RULE: every socket binds or connects to 127.0.0.1.
"""

import errno
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 10
# In the range DynamicUser= allocates from (61184-65519), in no passwd or group file here.
UID = 65011
GROUP = 65012  # stands for the `burrowd` group of SupplementaryGroups=
AF_MAX = 64  # above every socket family Linux has


def unit_settings(path):
    """Every `Key=value` of the unit's [Service] section, in order, repeated keys kept."""
    settings, section = [], None
    with open(path) as unit:
        for line in unit:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and line and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings.append((key, value))
    return settings


def expand(names, seen=None):
    """System calls of `names`, groups (@system-service) expanded, as systemd-analyze lists them."""
    seen = set() if seen is None else seen
    calls = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        listing = subprocess.run(
            ["systemd-analyze", "syscall-filter", name], check=True, capture_output=True, text=True
        ).stdout
        members = [line.strip() for line in listing.splitlines()[1:]]
        calls |= expand([m for m in members if m and not m.startswith("#")], seen)
    return calls


def filter_spec(settings, leave_out=()):
    calls, families = [], []
    for key, value in settings:
        if key == "SystemCallFilter":
            if value.startswith("~"):
                sys.exit("service_check.py: a deny-list SystemCallFilter= is not handled; extend it")
            calls += value.split()
        elif key == "RestrictAddressFamilies":
            families += value.split()
        elif key == "SystemCallArchitectures" and value != "native":
            sys.exit(f"service_check.py: SystemCallArchitectures={value} is not handled; extend it")
    allowed = sorted(expand(calls) - set(leave_out))
    return {"calls": allowed, "families": [getattr(socket, family) for family in families]}


def exec_filtered(spec_path, argv):
    """Loads the filter described in `spec_path` on this process, then executes argv."""
    import seccomp  # python3-seccomp; imported here, since only this step needs it

    with open(spec_path) as f:
        spec = json.load(f)
    rules = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
    for call in spec["calls"]:
        if call == "socket":
            continue
        try:
            rules.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError):
            pass  # a call of another architecture (or too new for libseccomp), as systemd skips it
    for family in range(AF_MAX):
        action = seccomp.ALLOW if family in spec["families"] else seccomp.ERRNO(errno.EAFNOSUPPORT)
        rules.add_rule(action, "socket", seccomp.Arg(0, seccomp.EQ, family))
    rules.load()
    os.execv(argv[0], argv)


# --- loopback peers -------------------------------------------------------------------------


def echo_server():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()


def udp_echo_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve():
        while True:
            data, peer = sock.recvfrom(65536)
            sock.sendto(data, peer)

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()


def free_privileged_port():
    for port in range(1023, 899, -1):
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            probe.close()
    raise RuntimeError("no free port from 900 to 1023 on 127.0.0.1")


# --- a small SOCKS5 client --------------------------------------------------------------------


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def socks5(proxy, login):
    sock = socket.create_connection(proxy, timeout=TIMEOUT)
    user, password = login
    sock.sendall(b"\x05\x01\x02")
    if recv_exact(sock, 2) != b"\x05\x02":
        raise ConnectionError("the proxy did not choose username/password")
    sock.sendall(bytes([1, len(user)]) + user.encode() + bytes([len(password)]) + password.encode())
    if recv_exact(sock, 2)[1] != 0:
        raise PermissionError(f"login as {user} refused")
    return sock


def encode_addr(host, port):
    try:
        raw = b"\x01" + socket.inet_aton(host)
    except OSError:
        raw = b"\x03" + bytes([len(host)]) + host.encode()
    return raw + port.to_bytes(2, "big")


def request(sock, command, host, port):
    sock.sendall(b"\x05" + bytes([command, 0]) + encode_addr(host, port))
    return read_reply(sock)


def read_reply(sock):
    _, code, _, atyp = recv_exact(sock, 4)
    if atyp == 1:
        host = socket.inet_ntoa(recv_exact(sock, 4))
    elif atyp == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(sock, 16))
    else:
        host = recv_exact(sock, recv_exact(sock, 1)[0]).decode()
    return code, (host, int.from_bytes(recv_exact(sock, 2), "big"))


def expect(condition, why):
    if not condition:
        raise AssertionError(why)


def echo_through(sock, size=256 * 1024):
    """Sends `size` bytes, closes the sending half, and reads them all back, then EOF."""
    payload = os.urandom(size)
    sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
    sender.start()
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    sender.join()
    expect(got == payload, f"echoed {len(got)} of {size} bytes, or different ones")


# --- the confined burrowd -----------------------------------------------------------------------


class Burrowd:
    def __init__(self, work, settings, spec, extra_args):
        self.lines, self.cond = [], threading.Condition()
        spec_path = os.path.join(work, f"filter-{len(os.listdir(work))}.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        caps = caps_of(settings)
        hard = nofile_hard(settings)
        command = [
            "prlimit", f"--nofile=1024:{hard}", "--",
            "setpriv", f"--reuid={UID}", f"--regid={UID}", f"--groups={GROUP}",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}",
            *(["--no-new-privs"] if dict(settings).get("NoNewPrivileges") == "yes" else []),
            "--", sys.executable, os.path.join(work, "service_check.py"), "--exec-filtered", spec_path,
            "--", os.path.join(work, "burrowd"), "--config", os.path.join(work, "burrowd.conf"), *extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern, after=0):
        """The first line from index `after` on matching `pattern` (a regex), and its index."""
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                for i, line in enumerate(self.lines[after:], after):
                    if match := re.search(pattern, line):
                        return match, i
                if self.process.poll() is not None and not self.cond.wait(0.2):
                    ended = describe_exit(self.process.returncode)
                    raise AssertionError(f"burrowd ended ({ended}) before {pattern!r}, saying {self.lines[-3:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no log line matching {pattern!r}")
                self.cond.wait(0.2)

    def exit_status(self):
        try:
            return self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def ended(self):
        """How burrowd ended, if it has (a client's error may come just before it does)."""
        try:
            return describe_exit(self.process.wait(1))
        except subprocess.TimeoutExpired:
            return "still running"

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def nofile_hard(settings):
    """LimitNOFILE=, or this host's hard limit where that is lower and cannot be raised here."""
    wanted, ours = int(dict(settings)["LimitNOFILE"]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if ours == resource.RLIM_INFINITY else min(wanted, ours)


def caps_of(settings):
    """The capabilities the unit keeps, in setpriv's spelling (+net_bind_service)."""
    values = dict(settings)
    bounding, ambient = values["CapabilityBoundingSet"].split(), values["AmbientCapabilities"].split()
    expect(bounding == ambient, "this check assumes the bounding and ambient sets are the same")
    return ",".join("+" + cap.lower().removeprefix("cap_") for cap in bounding)


def describe_exit(code):
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (": a system call outside the filter" if name == "SIGSYS" else "")
    return f"exit status {code}"


def status_field(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].split()
    return []


# --- the checks --------------------------------------------------------------------------------


def serve_everything(work, settings, spec, relay):
    echo, udp_echo = echo_server(), udp_echo_server()
    port = free_privileged_port()
    write_owned(work, "users", "alice:one\n")
    write_owned(
        work,
        "burrowd.conf",
        f"listen 127.0.0.1:{port}\nusers users\n"
        f"L tcp://127.0.0.1:0/127.0.0.1:{echo[1]}\nL udp://127.0.0.1:0/127.0.0.1:{udp_echo[1]}\n",
    )
    proxy = Burrowd(work, settings, spec, ["--relay", relay])
    try:
        raised, _ = proxy.wait_for(r"descriptor limit raised from 1024 to \d+")
        addrs, after = [], 0
        for _ in range(3):
            match, after = proxy.wait_for(r"listening on (?:udp )?127\.0\.0\.1:(\d+)", after)
            addrs.append(("127.0.0.1", int(match.group(1))))
            after += 1
        socks, tcp_forward, udp_forward = addrs
        expect(socks[1] == port, f"SOCKS on {socks}, not on the privileged port {port}")
        pid = proxy.process.pid  # prlimit, setpriv and python each executed the next
        confinement = {
            "Uid": status_field(pid, "Uid")[:1],
            "CapEff": status_field(pid, "CapEff"),
            "NoNewPrivs": status_field(pid, "NoNewPrivs"),
            "Seccomp": status_field(pid, "Seccomp"),
        }
        wanted = {"Uid": [str(UID)], "CapEff": ["0000000000000400"], "NoNewPrivs": ["1"], "Seccomp": ["2"]}
        expect(confinement == wanted, f"burrowd runs with {confinement}, not {wanted}")

        with socks5(socks, ("alice", "one")) as s:
            expect(request(s, 1, *echo)[0] == 0, "CONNECT by address refused")
            echo_through(s)
        with socks5(socks, ("alice", "one")) as s:
            expect(request(s, 1, "localhost", echo[1])[0] == 0, "CONNECT to localhost refused")
            echo_through(s, 4096)
        with socks5(socks, ("alice", "one")) as s:
            code, bound = request(s, 2, "0.0.0.0", 0)
            expect(code == 0, f"BIND refused: {code}")
            with socket.create_connection(bound, timeout=TIMEOUT) as peer:
                expect(read_reply(s)[0] == 0, "no second BIND reply")
                peer.sendall(b"from the peer")
                expect(recv_exact(s, 13) == b"from the peer", "BIND relay")
        with socks5(socks, ("alice", "one")) as s:
            code, relay_addr = request(s, 3, "0.0.0.0", 0)
            expect(code == 0, f"UDP ASSOCIATE refused: {code}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", 0))
                udp.settimeout(TIMEOUT)
                header = b"\x00\x00\x00" + encode_addr(*udp_echo)
                for i in range(20):
                    udp.sendto(header + b"datagram %d" % i, relay_addr)
                for i in range(20):
                    expect(udp.recv(65536) == header + b"datagram %d" % i, "UDP ASSOCIATE echo")
        with socket.create_connection(tcp_forward, timeout=TIMEOUT) as s:
            echo_through(s)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(TIMEOUT)
            udp.sendto(b"forwarded", udp_forward)
            expect(udp.recv(100) == b"forwarded", "udp:// echo")

        write_owned(work, "users", "bob:two\n")
        os.kill(pid, signal.SIGHUP)
        proxy.wait_for(r"reload: 1 user\(s\)")
        with socks5(socks, ("bob", "two")) as s:
            expect(request(s, 1, *echo)[0] == 0, "CONNECT after the reload")
        os.kill(pid, signal.SIGTERM)
        status = proxy.exit_status()
        expect(status == 0, describe_exit(status))
        proxy.wait_for(r"shutdown: \d+ sessions served")
        warnings = [line for line in proxy.lines if re.search(r"\b(WARN|ERROR)\b", line)]
        expect(not warnings, f"warnings: {warnings}")
        return f"{raised.group(0)}; uid {UID}, CapEff 0x400, seccomp on"
    except (OSError, AssertionError) as e:
        raise AssertionError(f"{e} (burrowd: {proxy.ended()})") from e
    finally:
        proxy.stop()


def filter_kills_without_mincore(work, settings):
    spec = filter_spec(settings, leave_out=["mincore"])
    echo = echo_server()
    port = free_privileged_port()
    write_owned(work, "users", "alice:one\n")
    write_owned(work, "burrowd.conf", f"listen 127.0.0.1:{port}\nusers users\n")
    proxy = Burrowd(work, settings, spec, [])
    try:
        proxy.wait_for(r"listening on ")
        try:
            with socks5(("127.0.0.1", port), ("alice", "one")) as s:
                request(s, 1, *echo)
                s.sendall(b"x")
                s.recv(1)
                # A relay whose client waits 250 ms gives its worker's stack pages back.
                time.sleep(1)
                s.sendall(b"x")
                s.recv(1)
        except OSError:
            pass
        status = proxy.exit_status()
        expect(status == -signal.SIGSYS, f"without mincore: {describe_exit(status)}, not killed by SIGSYS")
        return "killed by SIGSYS at the first relayed session that waits"
    finally:
        proxy.stop()


def write_owned(work, name, text):
    """A file burrowd's group may read and nobody else: how docs/operations.md installs /etc/burrowd."""
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, 0, GROUP)
    os.chmod(path, 0o640)


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--exec-filtered" and sys.argv[3] == "--":
        exec_filtered(sys.argv[2], sys.argv[4:])
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    burrowd, unit = sys.argv[1:]
    settings = unit_settings(unit)
    work = tempfile.mkdtemp(prefix="burrowd-service-")
    passed = failed = 0
    try:
        os.chown(work, 0, GROUP)
        os.chmod(work, 0o750)
        # Copies, so that the unprivileged user needs no access to the checkout.
        shutil.copy(burrowd, os.path.join(work, "burrowd"))
        shutil.copy(__file__, os.path.join(work, "service_check.py"))
        checks = [(f"sandbox --relay {relay}", serve_everything, (filter_spec(settings), relay)) for relay in ("copy", "splice")]
        checks.append(("sandbox control: the filter without mincore kills burrowd", filter_kills_without_mincore, ()))
        for name, check, args in checks:
            try:
                print(f"PASS {name}: {check(work, settings, *args)}", flush=True)
                passed += 1
            except Exception as e:  # one line per failed check, then the next check
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
                failed += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
