#!/usr/bin/env python3
"""Hostile-peer stress scenarios against a burrowd binary; one scenario per run.

Usage: python3 scripts/stress.py [--quick] [--work DIR] [--deadline SECONDS] SCENARIO
Normally run through scripts/stress.sh, which builds or finds the binary, runs each scenario
under a hard deadline and cleans up. Scenarios: stalled-one, stalled-many, half-dead,
slow-honest, fd-limit, churn (see SCENARIOS below and the header of stress.sh).

Environment: BURROWD (the binary, default target/release/burrowd), BURROWD_ARGS (extra flags
for every burrowd started, after the scenario's own, so they win), BURROWD_ARGS_<SCENARIO>
(extra flags for one scenario, e.g. BURROWD_ARGS_STALLED_MANY="--max-clients-per-ip 8").

Prints a few lines of figures, then `PASS name: ...` or `FAIL name: ...`; exits 1 on FAIL.
Python 3 standard library only. Linux only (/proc).

NETWORK RULE: every socket here connects to or binds 127.0.0.0/8; `loopback()` enforces it.
"""

import argparse
import collections
import errno
import ipaddress
import os
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

LOOPBACK = "127.0.0.1"
GREETING = b"\x05\x01\x00"  # SOCKS5, one method: no authentication
PARTIAL_GREETING = b"\x05\x01"  # ...and then the method byte never comes
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
    "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}
ORIGINAL_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)


def say(line=""):
    print(line, flush=True)


def loopback(host):
    """The NETWORK RULE: refuse to use any address outside 127.0.0.0/8 and ::1."""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to use non-loopback address {host}")
    return host


def errname(code):
    return errno.errorcode.get(code, str(code))


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


class Failure(Exception):
    """A scenario cannot go on; the message says why."""


class Deadline(Exception):
    """SIGTERM (the hard deadline in stress.sh) or the scenario's own budget ran out."""


class Run:
    """What every scenario needs: size, scratch dir, budget, the binary and what it can do."""

    def __init__(self, quick, work, deadline_seconds):
        self.quick = quick
        self.work = work
        # Leave room under the hard deadline to stop burrowd and print figures.
        self.deadline = time.monotonic() + max(5.0, deadline_seconds - 15.0)
        self.binary = os.path.abspath(os.environ.get("BURROWD", "target/release/burrowd"))
        if not os.access(self.binary, os.X_OK):
            raise Failure(f"no executable burrowd at {self.binary} (set BURROWD)")
        try:
            self.help = subprocess.run([self.binary, "--help"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Failure(f"{self.binary} --help: {e}") from e
        self.burrowds = []
        self.cleanups = []

    def scale(self, full):
        return max(1, full // 10) if self.quick else full

    def has_flag(self, flag):
        return any(word.rstrip(",") == flag for line in self.help.splitlines() for word in line.split())

    def left(self):
        return self.deadline - time.monotonic()

    def check_time(self, what):
        if self.left() <= 0:
            raise Deadline(f"scenario budget ran out during {what}")


# ---------------------------------------------------------------- /proc


def proc_figures(pid):
    """Threads, RSS (KiB) and open descriptors of a process."""
    threads = rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"threads": threads, "rss": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def show(fig):
    return f"threads {fig['threads']}, RSS {mib(fig['rss'])}, fds {fig['fds']}"


def nofile_limits(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    return "?", "?"


def tcp_rows():
    """(local port, remote port, state name, inode) of every TCP socket in this namespace."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    yield (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16),
                           TCP_STATES.get(fields[3], fields[3]), int(fields[9]))
        except FileNotFoundError:
            continue


def socket_states(pid, local_ports=(), remote_ports=()):
    """TCP states of the sockets a process holds (by inode, what `ss -tanp` shows with its pid),
    and of all sockets on its ports (local: its listening port; remote: its targets), which
    includes the orphans it has closed that the kernel still finishes (FIN_WAIT2, TIME_WAIT)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    held, by_port = collections.Counter(), collections.Counter()
    for lport, rport, state, inode in tcp_rows():
        if state == "LISTEN":
            continue
        if inode in inodes:
            held[state] += 1
        if lport in local_ports or rport in remote_ports:
            by_port[state] += 1
    return held, by_port


def show_states(counter):
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


class Sampler(threading.Thread):
    """Samples a process's figures every half second and keeps the peaks."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = {"threads": 0, "rss": 0, "fds": 0}
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.5):
            try:
                fig = proc_figures(self.pid)
            except OSError:
                return
            for k in self.peak:
                self.peak[k] = max(self.peak[k], fig[k] or 0)

    def stop(self):
        self.stopping.set()
        self.join(2)


# ---------------------------------------------------------------- burrowd


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def listening(port):
    return any(lport == port and state == "LISTEN" for lport, _, state, _ in tcp_rows())


class Burrowd:
    """burrowd on 127.0.0.1:PORT (a free port picked here: works with -q, which hides the
    "listening on" line), its output in a log file, its pid recorded for stress.sh's trap.
    Started under `prlimit --nofile=SOFT:HARD`: the limits this script was started with unless
    the scenario says otherwise (this script raises its own for its many client sockets)."""

    def __init__(self, run, name, args, nofile=None):
        self.run_ = run
        self.name = name
        self.log = os.path.join(run.work, f"{name}.burrowd.log")
        env_name = "BURROWD_ARGS_" + name.upper().replace("-", "_")
        extra = shlex.split(os.environ.get("BURROWD_ARGS", "")) + shlex.split(os.environ.get(env_name, ""))
        soft, hard = nofile or ORIGINAL_NOFILE
        prlimit = shutil.which("prlimit")
        self.flags = [*args, *extra]
        for _ in range(3):
            port = free_port()
            cmd = [run.binary, "--listen", f"{LOOPBACK}:{port}", *self.flags]
            preexec = None
            if prlimit:
                cmd = [prlimit, f"--nofile={soft}:{hard}", *cmd]
            else:
                def preexec():
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             preexec_fn=preexec)
            run.burrowds.append(self)
            with open(os.path.join(run.work, "pids"), "a") as f:
                f.write(f"{self.proc.pid}\n")
            self.cmd = cmd
            for _ in range(200):
                if listening(port):
                    self.port, self.pid = port, self.proc.pid
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.stop()
                raise Failure(f"burrowd did not listen on {LOOPBACK}:{port} within 10s")
            if "in use" in self.tail(3):  # someone took the port between our probe and burrowd
                continue
            raise Failure(f"burrowd exited with status {self.proc.returncode}: {self.tail(3).strip()}")
        raise Failure("burrowd could not get a free port in 3 tries")

    def describe(self):
        return " ".join(shlex.quote(os.path.basename(a) if a in (self.cmd[0], self.run_.binary) else a)
                        for a in self.cmd)

    def tail(self, n=15):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(collections.deque(f, n))
        except OSError:
            return ""

    def show_log(self):
        """Its warnings and errors (the last few) and the last lines of its log."""
        try:
            with open(self.log, errors="replace") as f:
                warnings = collections.deque((line for line in f if "[WARN " in line or "[ERROR " in line), 5)
        except OSError:
            warnings = []
        if warnings:
            say("  burrowd's last warnings:")
            for line in warnings:
                say(f"    {line.rstrip()}")
        say("  last lines of burrowd's log:")
        for line in self.tail(10).splitlines():
            say(f"    {line}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------- servers


class _Conn:
    __slots__ = ("buf", "eof")

    def __init__(self):
        self.buf = bytearray()
        self.eof = False


class Server(threading.Thread):
    """A TCP server on 127.0.0.1 (port from the OS) on one selector thread.
    mode "echo": sends back everything it reads, closes after the peer's FIN and the last echo.
    mode "silent": accepts and holds every connection: never reads, writes or closes it."""

    def __init__(self, run, mode):
        super().__init__(daemon=True)
        self.mode = mode
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.held = []
        self.accepted = 0
        self.accept_errors = collections.Counter()
        self.stopping = False
        self.start()
        run.cleanups.append(self.stop)

    def run(self):
        while not self.stopping:
            for key, events in self.sel.select(0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._serve(key, events)

    def _accept(self):
        for _ in range(512):
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                self.accept_errors[errname(e.errno)] += 1
                time.sleep(0.01)
                return
            self.accepted += 1
            if self.mode == "silent":
                self.held.append(conn)
                continue
            conn.setblocking(False)
            self.sel.register(conn, selectors.EVENT_READ, _Conn())

    def _serve(self, key, events):
        conn, c = key.fileobj, key.data
        try:
            if events & selectors.EVENT_READ and not c.eof:
                data = conn.recv(65536)
                if data:
                    c.buf += data
                else:
                    c.eof = True
            if c.buf:
                del c.buf[:conn.send(c.buf)]
        except BlockingIOError:
            pass
        except OSError:
            self._close(conn)
            return
        if c.eof and not c.buf:
            self._close(conn)
            return
        want = (0 if c.eof else selectors.EVENT_READ) | (selectors.EVENT_WRITE if c.buf else 0)
        if want != key.events:
            self.sel.modify(conn, want, c)

    def _close(self, conn):
        self.sel.unregister(conn)
        conn.close()

    def stop(self):
        self.stopping = True
        self.join(2)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        for conn in self.held:
            conn.close()


# ---------------------------------------------------------------- SOCKS5 clients


def connect_request(port):
    return b"\x05\x01\x00\x01" + socket.inet_aton(LOOPBACK) + struct.pack("!H", port)


def reply_length(head):
    """Length of a SOCKS5 reply from its first 5 bytes, None if its address type is unknown."""
    return {1: 10, 4: 22, 3: 7 + head[4]}.get(head[3])


class Refused(Exception):
    """The proxy closed, reset or answered with a failure."""


def recv_exact(sock, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionError as e:
            raise Refused(type(e).__name__) from e
        if not chunk:
            raise Refused("closed")
        buf += chunk
    return bytes(buf)


def send_all(sock, data, deadline):
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        sock.sendall(data)
    except ConnectionError as e:
        raise Refused(type(e).__name__) from e


def socks_connect(sock, target_port, deadline, stage):
    """Greeting and CONNECT to 127.0.0.1:target_port on a connected socket; `stage[0]` says how
    far it got, for the caller's report."""
    stage[0] = "method reply"
    send_all(sock, GREETING, deadline)
    method = recv_exact(sock, 2, deadline)
    if method != b"\x05\x00":
        raise Refused(f"method reply {method.hex()}")
    stage[0] = "CONNECT reply"
    send_all(sock, connect_request(target_port), deadline)
    head = recv_exact(sock, 5, deadline)
    length = reply_length(head)
    if head[0] != 5 or length is None:
        raise Refused(f"malformed reply {head.hex()}")
    recv_exact(sock, length - 5, deadline)
    if head[1] != 0:
        raise Refused(f"reply {head[1]}")


def valid_client(proxy_port, echo_port, timeout=5.0, source=LOOPBACK):
    """One well-behaved client: connect, greeting, CONNECT to the echo server, 1 byte there and
    back. Returns (outcome "ok"/"refused"/"timeout"/"error", seconds, detail)."""
    started = time.monotonic()
    deadline = started + timeout
    stage = ["connect"]
    sock = socket.socket()
    try:
        sock.bind((loopback(source), 0))
        sock.settimeout(timeout)
        sock.connect((LOOPBACK, proxy_port))
        socks_connect(sock, echo_port, deadline, stage)
        stage[0] = "echo"
        send_all(sock, b"!", deadline)
        if recv_exact(sock, 1, deadline) != b"!":
            return "error", time.monotonic() - started, "wrong echo"
        return "ok", time.monotonic() - started, ""
    except TimeoutError:
        return "timeout", time.monotonic() - started, f"nothing within {timeout:g}s waiting for {stage[0]}"
    except (Refused, ConnectionError) as e:
        why = str(e) or type(e).__name__
        return "refused", time.monotonic() - started, f"{why} before {stage[0]}"
    except OSError as e:
        return "error", time.monotonic() - started, f"{e} at {stage[0]}"
    finally:
        sock.close()


class Pending:
    __slots__ = ("sock", "stage", "deadline", "inbuf", "outcome", "detail")


def open_sessions(run, count, proxy_port, target_port, per_session):
    """Opens `count` SOCKS5 sessions at once on one selector: connect, greeting, CONNECT to
    127.0.0.1:target_port, each with its own deadline of `per_session` seconds from its connect.
    Each ends "established" (reply 0; the socket is left open), "refused" (failure reply, close
    or reset) or "silent" (nothing decisive by its deadline; detail says what it waited for)."""
    sel = selectors.DefaultSelector()
    sessions = []

    def settle(p, outcome, detail, close):
        p.outcome, p.detail = outcome, detail
        try:
            sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass
        if close:
            p.sock.close()

    for _ in range(count):
        p = Pending()
        try:
            p.sock = socket.socket()
        except OSError as e:
            raise Failure(f"this script ran out of descriptors opening session {len(sessions) + 1}: {e}") from e
        p.sock.setblocking(False)
        p.deadline = time.monotonic() + per_session
        p.inbuf = bytearray()
        p.outcome = None
        sessions.append(p)
        err = p.sock.connect_ex((LOOPBACK, proxy_port))
        if err not in (0, errno.EINPROGRESS):
            settle(p, "refused", f"connect {errname(err)}", True)
            continue
        p.stage = "connect"
        sel.register(p.sock, selectors.EVENT_WRITE, p)

    def step(p):
        if p.stage == "connect":
            err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return settle(p, "refused", f"connect {errname(err)}", True)
            p.sock.send(GREETING)
            p.stage = "method reply"
            sel.modify(p.sock, selectors.EVENT_READ, p)
            return
        data = p.sock.recv(4096)
        if not data:
            return settle(p, "refused", f"closed before {p.stage}", True)
        p.inbuf += data
        if p.stage == "method reply" and len(p.inbuf) >= 2:
            if p.inbuf[:2] != b"\x05\x00":
                return settle(p, "refused", f"method reply {bytes(p.inbuf[:2]).hex()}", True)
            del p.inbuf[:2]
            p.sock.send(connect_request(target_port))
            p.stage = "CONNECT reply"
        if p.stage == "CONNECT reply" and len(p.inbuf) >= 5:
            length = reply_length(p.inbuf)
            if p.inbuf[0] != 5 or length is None:
                return settle(p, "refused", f"malformed reply {bytes(p.inbuf[:5]).hex()}", True)
            if len(p.inbuf) >= length:
                if p.inbuf[1] == 0:
                    return settle(p, "established", "", False)
                return settle(p, "refused", f"reply {p.inbuf[1]}", True)

    last = max((p.deadline for p in sessions), default=0)
    while sel.get_map() and time.monotonic() < last + 0.1:
        run.check_time("opening sessions")
        for key, _ in sel.select(0.05):
            p = key.data
            try:
                step(p)
            except BlockingIOError:
                pass
            except OSError as e:
                settle(p, "refused", f"{errname(e.errno) if e.errno else type(e).__name__} before {p.stage}", True)
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            p = key.data
            if now >= p.deadline:
                settle(p, "silent", f"waiting for {p.stage}", False)
    for key in list(sel.get_map().values()):
        settle(key.data, "silent", f"waiting for {key.data.stage}", False)
    sel.close()
    run.cleanups.append(lambda: [p.sock.close() for p in sessions])
    return sessions


def tally(sessions):
    outcomes = collections.Counter(p.outcome for p in sessions)
    details = collections.Counter(f"{p.outcome}: {p.detail}" for p in sessions if p.outcome != "established")
    return outcomes, details


def top(counter, n=3):
    return "; ".join(f"{v}x {k}" for k, v in counter.most_common(n))


# ---------------------------------------------------------------- stalled-one, stalled-many


class Attack:
    """Stalled connections to the proxy from the given source addresses: odd ones send a partial
    greeting (05 01) once connected, even ones send nothing. All connects are non-blocking and
    not waited for. A pump thread sends the partial greetings as connections complete and counts
    what the proxy does to them; a connection it closes is closed here too, never reopened."""

    def __init__(self, run, count, proxy_port, sources):
        self.run_ = run
        self.count = count
        self.addr = (LOOPBACK, proxy_port)
        self.sources = [loopback(s) for s in sources]
        self.sel = selectors.DefaultSelector()
        self.opened = self.connected = self.partial_sent = self.bytes_received = 0
        self.open_errors = collections.Counter()
        self.connect_failed = collections.Counter()  # failed after the non-blocking connect
        self.closed = collections.Counter()  # closed by the proxy after connecting: eof / reset
        self.closed_partial = 0  # of those, how many had sent the partial greeting
        self.stopping = False
        self.thread = threading.Thread(target=self._pump, daemon=True)
        run.cleanups.append(self.stop)

    def open(self):
        self.started = started = time.monotonic()
        for i in range(self.count):
            if i % 256 == 0:
                self.run_.check_time("opening stalled connections")
            try:
                s = socket.socket()
            except OSError as e:  # out of descriptors here: say so, go on with what is open
                self.open_errors[f"not opened, socket() {errname(e.errno)}: raise RLIMIT_NOFILE"] += self.count - i
                break
            try:
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((self.sources[i % len(self.sources)], 0))
                err = s.connect_ex(self.addr)
            except OSError as e:
                err = e.errno
            if err not in (0, errno.EINPROGRESS):
                self.open_errors[errname(err)] += 1
                s.close()
                continue
            self.sel.register(s, selectors.EVENT_WRITE, i % 2 == 1)
            self.opened += 1
        self.open_seconds = time.monotonic() - started
        self.thread.start()

    def still_connecting(self):
        return self.opened - self.connected - sum(self.connect_failed.values())

    def _drop(self, s, counter, why, partial=False):
        counter[why] += 1
        if partial and counter is self.closed:
            self.closed_partial += 1
        self.sel.unregister(s)
        s.close()

    def _pump(self):
        while not self.stopping:
            for key, _ in self.sel.select(0.2):
                s = key.fileobj
                if key.events == selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self._drop(s, self.connect_failed, errname(err))
                        continue
                    self.connected += 1
                    if key.data:
                        try:
                            s.send(PARTIAL_GREETING)
                            self.partial_sent += 1
                        except OSError:
                            self._drop(s, self.closed, "reset", True)
                            continue
                    self.sel.modify(s, selectors.EVENT_READ, key.data)
                    continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    self._drop(s, self.closed, "reset", key.data)
                    continue
                if data:
                    self.bytes_received += len(data)
                else:
                    self._drop(s, self.closed, "eof", key.data)

    def stop(self):
        self.stopping = True
        if self.thread.is_alive():
            self.thread.join(2)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()

    def summary(self):
        closed = sum(self.closed.values())
        return (f"{self.connected} connected, {self.still_connecting()} still connecting, "
                f"{sum(self.connect_failed.values())} failed to connect"
                f"{' (' + show_states(self.connect_failed) + ')' if self.connect_failed else ''}; "
                f"closed by burrowd {closed} (eof {self.closed['eof']}, reset {self.closed['reset']}; "
                f"{self.closed_partial} of them had sent 05 01)"
                + (f"; {self.bytes_received} bytes received from burrowd" if self.bytes_received else ""))


def stalled(run, name, sources):
    count = run.scale(10_000)
    clients = 5 if run.quick else 20
    args = []
    note = ""
    if run.quick:
        # A tenth of the attackers against the default 1024 workers would prove nothing:
        # shrink the pool and queue by the same factor so they are still outnumbered.
        args = ["--max-clients", "102", "--queue", "12"]
        note = " (quick: --max-clients 102 --queue 12, a tenth of the defaults)"
    echo = Server(run, "echo")
    burrowd = Burrowd(run, name, args)
    say(f"{name}: {burrowd.describe()}{note}")
    start = proc_figures(burrowd.pid)
    sampler = Sampler(burrowd.pid)
    sampler.start()
    run.cleanups.append(sampler.stop)
    attack = Attack(run, count, burrowd.port, sources)
    attack.open()
    src = sources[0] if len(sources) == 1 else f"{sources[0]}..{sources[-1]} ({len(sources)} addresses)"
    say(f"  {attack.opened} stalled connections from {src}, odd ones sending 05 01, opened in "
        f"{attack.open_seconds:.2f}s" + (f"; {show_states(attack.open_errors)}" if attack.open_errors else ""))
    # Let burrowd take in what it will: until none is still connecting (SYNs the full accept
    # queue dropped are retried by the kernel after 1s, 3s...), at least 0.5s, at most 2s.
    opened = time.monotonic()
    while time.monotonic() - opened < 2.0 and (attack.still_connecting() > 0 or time.monotonic() - opened < 0.5):
        time.sleep(0.1)
    sit = proc_figures(burrowd.pid)
    say(f"  {time.monotonic() - attack.started:.1f}s after the first: {attack.summary()}")
    say(f"  burrowd while they sit: {show(sit)} (at start: {show(start)})")

    results = []
    for i in range(clients):
        if run.left() < 6:
            say(f"  scenario budget nearly spent: stopping after {i} valid clients")
            break
        if i:
            time.sleep(0.1)
        results.append(valid_client(burrowd.port, echo.port))
    sampler.stop()
    end = proc_figures(burrowd.pid)
    ok = [t for outcome, t, _ in results if outcome == "ok"]
    fast = [t for t in ok if t < 1.0]
    outcomes = collections.Counter(outcome for outcome, _, _ in results)
    failures = collections.Counter(f"{outcome}: {detail}" for outcome, _, detail in results if outcome != "ok")
    latency = (f"latency max {max(ok):.3f}s median {statistics.median(ok):.3f}s" if ok else "no latency: none succeeded")
    say(f"  valid clients from {LOOPBACK}: {len(ok)}/{len(results)} succeeded, {len(fast)} under 1s; {latency}"
        + (f"; failures: {top(failures)}" if failures else ""))
    if any(o != "ok" for o in outcomes):
        failed_times = [t for outcome, t, _ in results if outcome != "ok"]
        say(f"  failed clients gave up after {min(failed_times):.3f}..{max(failed_times):.3f}s")
    say(f"  by the end: {attack.summary()}; burrowd {show(end)}; peaks threads {sampler.peak['threads']}, "
        f"RSS {mib(sampler.peak['rss'])}, fds {sampler.peak['fds']}")
    if attack.opened + sum(attack.open_errors.values()) < count or any(
            k.startswith("not opened") for k in attack.open_errors):
        return False, f"only {attack.opened} of {count} stalled connections could be opened here: not a valid run"
    if len(results) == clients and len(fast) == clients:
        return True, f"{clients}/{clients} valid clients under 1s (max {max(ok):.3f}s)"
    return False, f"{len(fast)}/{clients} valid clients finished under 1s (target: all)"


def stalled_one(run):
    return stalled(run, "stalled-one", [LOOPBACK])


def stalled_many(run):
    # 100 stalled connections per source address, as at full size (100 addresses).
    count = run.scale(10_000)
    return stalled(run, "stalled-many", [f"127.0.0.{i}" for i in range(2, 2 + max(1, count // 100))])


# ---------------------------------------------------------------- slow-honest


class Flood:
    """Silent connections from one source address, one a millisecond (each connect bounded by
    2 s), the newest `keep` held open, until stopped, `count` are opened, or the run's budget
    is spent. Counts those burrowd closed (to make room for newer ones) before this side did."""

    def __init__(self, run, source, proxy_port, count, keep=64):
        self.run_, self.source, self.port, self.count, self.keep = run, loopback(source), proxy_port, count, keep
        self.opened = self.closed_by_burrowd = 0
        self.errors = collections.Counter()
        self.held = collections.deque()
        self.stopping = False
        self.thread = threading.Thread(target=self._flood, daemon=True)
        self.thread.start()
        run.cleanups.append(self.stop)

    def _closed_by_burrowd(self, s):
        try:
            s.setblocking(False)
            return s.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _flood(self):
        while not self.stopping and self.opened < self.count and self.run_.left() > 5:
            time.sleep(0.001)
            s = socket.socket()
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((self.source, 0))
                s.settimeout(2.0)
                s.connect((LOOPBACK, self.port))
            except OSError as e:
                self.errors[errname(e.errno) if e.errno else type(e).__name__] += 1
                s.close()
                continue
            self.opened += 1
            self.held.append(s)
            if len(self.held) > self.keep:
                old = self.held.popleft()
                self.closed_by_burrowd += self._closed_by_burrowd(old)
                old.close()

    def stop(self):
        self.stopping = True
        if self.thread.is_alive():
            self.thread.join(3)
        while self.held:
            old = self.held.popleft()
            self.closed_by_burrowd += self._closed_by_burrowd(old)
            old.close()


def slow_client(proxy_port, echo_port, source, rtt, timeout=5.0):
    """A valid client over a slow link: each message it sends is split in two, and it waits
    half of `rtt` before each half. Greeting, CONNECT to the echo server, one byte there and
    back. Returns (ok, detail)."""
    deadline = time.monotonic() + timeout
    stage = ["connect"]
    sock = socket.socket()
    try:
        sock.bind((loopback(source), 0))
        sock.settimeout(timeout)
        sock.connect((LOOPBACK, proxy_port))
        for stage[0], message, answer in (("method reply", GREETING, 2),
                                          ("CONNECT reply", connect_request(echo_port), 10),
                                          ("echo", b"!", 1)):
            half = (len(message) + 1) // 2
            for piece in (message[:half], message[half:]):
                if piece:
                    time.sleep(rtt / 2)
                    send_all(sock, piece, deadline)
            got = recv_exact(sock, answer, deadline)
            if stage[0] == "method reply" and got != b"\x05\x00":
                return False, f"method reply {got.hex()}"
            if stage[0] == "CONNECT reply" and got[:2] != b"\x05\x00":
                return False, f"CONNECT reply {got[:2].hex()}"
        return True, ""
    except TimeoutError:
        return False, f"nothing within {timeout:g}s waiting for {stage[0]}"
    except (Refused, ConnectionError) as e:
        return False, f"{str(e) or type(e).__name__} before {stage[0]}"
    except OSError as e:
        return False, f"{e} at {stage[0]}"
    finally:
        sock.close()


def slow_honest(run):
    tries = 10
    args = ["--max-clients", "64", "--queue", "0"]
    echo = Server(run, "echo")
    burrowd = Burrowd(run, "slow-honest", args)
    say(f"slow-honest: {burrowd.describe()}")
    sources = [f"127.0.0.{i}" for i in range(2, 6)]
    floods = [Flood(run, source, burrowd.port, run.scale(200_000)) for source in sources]
    # Until the flood holds every worker and has started making room out of its own.
    pressed = time.monotonic() + 10
    while time.monotonic() < pressed and sum(f.closed_by_burrowd for f in floods) < 64:
        time.sleep(0.05)
    results = []
    for _ in range(tries):
        run.check_time("slow clients")
        results.append(slow_client(burrowd.port, echo.port, "127.0.0.6", 0.050))
    for flood in floods:
        flood.stop()
    opened = sum(f.opened for f in floods)
    closed = sum(f.closed_by_burrowd for f in floods)
    errors = sum((f.errors for f in floods), collections.Counter())
    say(f"  flood from {sources[0]}..{sources[-1]}: {opened} silent connections, {closed} closed by burrowd "
        f"to make room" + (f"; connect errors: {show_states(errors)}" if errors else ""))
    ok = sum(1 for passed, _ in results if passed)
    failures = collections.Counter(detail for passed, detail in results if not passed)
    say(f"  slow clients from 127.0.0.6 (50 ms a round trip): {ok}/{len(results)} served"
        + (f"; failures: {top(failures)}" if failures else ""))
    if closed < 64:
        return False, f"the flood never filled the workers ({closed} closed to make room): not a valid run"
    if ok == tries:
        return True, f"{tries}/{tries} slow clients served while the flood made room out of its own"
    return False, f"{ok}/{tries} slow clients served (target: all)"


# ---------------------------------------------------------------- half-dead


def half_dead(run):
    count = run.scale(200)
    timeout = 5
    target = timeout + 5
    window = target + 5
    silent = Server(run, "silent")
    if run.has_flag("--half-close-timeout"):
        args, note = ["--half-close-timeout", f"{timeout}s"], f"--half-close-timeout {timeout}s so it finishes fast (default 60s)"
    else:
        args, note = [], f"this burrowd has no --half-close-timeout flag: run without it; target kept at {target}s"
    burrowd = Burrowd(run, "half-dead", args)
    say(f"half-dead: {burrowd.describe()}: {note}")
    base = proc_figures(burrowd.pid)["fds"]
    sessions = open_sessions(run, count, burrowd.port, silent.port, 5.0)
    outcomes, details = tally(sessions)
    established = [p for p in sessions if p.outcome == "established"]
    held = proc_figures(burrowd.pid)["fds"]
    say(f"  {count} sessions to a target that accepts and stays silent: {outcomes['established']} established"
        + (f", {top(details)}" if details else "") + f"; burrowd fds {base} at start, {held} with them open")
    if not established:
        return False, "no session was established"
    for p in established:
        p.sock.close()
    closed_at = time.monotonic()
    series, freed = [], None
    while True:
        time.sleep(max(0.0, closed_at + len(series) + 1 - time.monotonic()))
        extra = proc_figures(burrowd.pid)["fds"] - base
        series.append(extra)
        if extra <= 0:
            freed = len(series)
            break
        if len(series) >= window:
            break
        run.check_time("waiting for descriptors")
    say("  clients closed at t=0; burrowd's extra fds, once a second: "
        + " ".join(f"{t + 1}s:{n}" for t, n in enumerate(series)))
    held_states, _ = socket_states(burrowd.pid)
    say(f"  burrowd's sockets at the end: {show_states(held_states)}")
    if freed is not None and freed <= target:
        return True, f"all freed {freed}s after the clients closed (target: within {target}s)"
    if freed is not None:
        return False, f"all freed only {freed}s after the clients closed (target: within {target}s)"
    return False, f"{series[-1]} descriptors still held {window}s after the clients closed (target: all freed within {target}s)"


# ---------------------------------------------------------------- fd-limit


def fd_limit(run):
    count = run.scale(1500)
    soft = run.scale(1024)
    hard = int(os.environ.get("STRESS_FD_HARD", "20000"))
    want = count * 14 // 15  # 1,400 of 1,500
    echo = Server(run, "echo")
    # Every client comes from 127.0.0.1: the address's share (half the workers by default)
    # is lifted, so that descriptors are the only limit this scenario meets.
    args = ["--max-clients", str(count), "--max-clients-per-ip", str(count)]
    burrowd = Burrowd(run, "fd-limit", args, nofile=(soft, hard))
    say(f"fd-limit: {burrowd.describe()}")
    lim_soft, lim_hard = nofile_limits(burrowd.pid)
    say(f"  burrowd's RLIMIT_NOFILE once listening: soft {lim_soft}, hard {lim_hard} (started with {soft}:{hard})")
    started = time.monotonic()
    sessions = open_sessions(run, count, burrowd.port, echo.port, 3.0)
    outcomes, details = tally(sessions)
    fig = proc_figures(burrowd.pid)
    say(f"  {count} idle sessions, 3s deadline each, decided in {time.monotonic() - started:.1f}s: "
        f"{outcomes['established']} established, {outcomes['refused']} refused, {outcomes['silent']} silent"
        + (f" ({top(details, 4)})" if details else ""))
    say(f"  burrowd with them open: {show(fig)}")
    if hard < 4 * count:
        # A hard limit too low for the sessions (STRESS_FD_HARD): burrowd admits what fits,
        # and what matters is that every client past that is refused, never left unanswered.
        want = 1
        say(f"  hard limit {hard} is below what {count} sessions need: the target is 0 silent")
    if outcomes["established"] >= want and outcomes["silent"] == 0:
        return True, f"{outcomes['established']} established (target >= {want}), 0 silent"
    return False, (f"{outcomes['established']} established (target >= {want}), "
                   f"{outcomes['silent']} silent (target 0)")


# ---------------------------------------------------------------- churn


def churn_session(i, proxy_port, echo_port):
    """One churn session; i % 10 == 0: reset mid-relay, 1: abandoned mid-handshake, else echo."""
    kind = {0: "reset", 1: "abandoned"}.get(i % 10, "echo")
    deadline = time.monotonic() + 5.0
    stage = ["connect"]
    sock = socket.socket()
    try:
        sock.settimeout(5.0)
        sock.connect((LOOPBACK, proxy_port))
        if kind == "abandoned":
            send_all(sock, PARTIAL_GREETING, deadline)
            return kind, None
        socks_connect(sock, echo_port, deadline, stage)
        stage[0] = "echo"
        payload = b"churn %d\n" % i
        send_all(sock, payload, deadline)
        if recv_exact(sock, len(payload), deadline) != payload:
            return kind, "wrong echo"
        if kind == "reset":
            send_all(sock, payload, deadline)  # its echo is on its way when the RST goes out
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return kind, None
    except TimeoutError:
        return kind, f"timeout waiting for {stage[0]}"
    except (Refused, ConnectionError) as e:
        return kind, f"{str(e) or type(e).__name__} before {stage[0]}"
    except OSError as e:
        return kind, f"{e} at {stage[0]}"
    finally:
        sock.close()


def churn_run(run, total, concurrency, proxy_port, echo_port):
    lock = threading.Lock()
    state = {"next": 0}
    done, failed = collections.Counter(), collections.Counter()

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= total or run.left() <= 0:
                    return
                state["next"] = i + 1
            kind, error = churn_session(i, proxy_port, echo_port)
            with lock:
                done[kind] += 1
                if error:
                    failed[f"{kind}: {error}"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, run.left() + 10))
    return done, failed


def settle_fds(pid, base, seconds, also=lambda: True):
    """Waits (bounded) until the process holds at most `base` descriptors and `also()` holds."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if proc_figures(pid)["fds"] <= base and also():
            break
        time.sleep(0.2)
    return time.monotonic() - started


def churn(run):
    total = run.scale(20_000)
    concurrency = 20
    warm = 10 * concurrency
    echo = Server(run, "echo")
    burrowd = Burrowd(run, "churn", [])
    say(f"churn: {burrowd.describe()}")
    start = proc_figures(burrowd.pid)
    churn_run(run, warm, concurrency, burrowd.port, echo.port)
    settle_fds(burrowd.pid, start["fds"], 5)
    warmed = proc_figures(burrowd.pid)

    started = time.monotonic()
    done, failed = churn_run(run, total, concurrency, burrowd.port, echo.port)
    seconds = time.monotonic() - started
    finished = sum(done.values())
    say(f"  {finished} sessions, {concurrency} at a time ({done['echo']} echo, {done['reset']} reset mid-relay, "
        f"{done['abandoned']} abandoned mid-handshake) in {seconds:.1f}s: {finished / seconds:.0f} sessions/s; "
        f"{sum(failed.values())} failed" + (f" ({top(failed)})" if failed else ""))

    def no_stuck_sockets():
        held, _ = socket_states(burrowd.pid)
        return held["CLOSE_WAIT"] == 0 and held["FIN_WAIT2"] == 0

    waited = settle_fds(burrowd.pid, start["fds"], 10, no_stuck_sockets)
    end = proc_figures(burrowd.pid)
    held, by_port = socket_states(burrowd.pid, local_ports={burrowd.port}, remote_ports={echo.port})
    say(f"  after settling {waited:.1f}s: burrowd fds {end['fds']} (at start {start['fds']}, after a warm-up of "
        f"{warm} sessions {warmed['fds']}); threads {end['threads']} (at start {start['threads']}, after the "
        f"warm-up {warmed['threads']}; started workers are kept by design); RSS {mib(end['rss'])} "
        f"(after the warm-up {mib(warmed['rss'])})")
    say(f"  burrowd's sockets (held by its pid): {show_states(held)}; on its ports, orphans included: "
        f"{show_states(by_port)}")
    problems = []
    if finished < total:
        problems.append(f"only {finished}/{total} sessions ran before the deadline")
    if held["CLOSE_WAIT"]:
        problems.append(f"{held['CLOSE_WAIT']} CLOSE_WAIT")
    if held["FIN_WAIT2"]:
        problems.append(f"{held['FIN_WAIT2']} FIN_WAIT2")
    if end["fds"] > start["fds"]:
        problems.append(f"fds {end['fds']}, not back to {start['fds']}")
    if problems:
        return False, "; ".join(problems) + " (target: 0 CLOSE_WAIT, 0 FIN_WAIT2, fds back to baseline)"
    return True, (f"0 CLOSE_WAIT, 0 FIN_WAIT2, fds back to {start['fds']}; "
                  f"{finished / seconds:.0f} sessions/s")


SCENARIOS = {
    "stalled-one": stalled_one,
    "stalled-many": stalled_many,
    "slow-honest": slow_honest,
    "half-dead": half_dead,
    "fd-limit": fd_limit,
    "churn": churn,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts, for CI")
    parser.add_argument("--work", help="scratch directory for logs (default: a new temporary one)")
    parser.add_argument("--deadline", type=float, default=300, help="hard limit in seconds (default 300)")
    parser.add_argument("scenario", choices=SCENARIOS)
    opts = parser.parse_args()

    # The client side holds up to 10,000 attacker sockets (plus the echo server's end of every
    # proxied session): take all the descriptors the hard limit allows.
    resource.setrlimit(resource.RLIMIT_NOFILE, (ORIGINAL_NOFILE[1], ORIGINAL_NOFILE[1]))

    def on_term(signum, _frame):
        raise Deadline(f"stopped by signal {signum} (the hard deadline, or an interrupt)")

    signal.signal(signal.SIGTERM, on_term)
    work = opts.work or tempfile.mkdtemp(prefix="burrowd-stress.")
    name = opts.scenario
    run = None
    passed, verdict = False, ""
    try:
        run = Run(opts.quick, work, opts.deadline)
        passed, verdict = SCENARIOS[name](run)
    except (Failure, Deadline) as e:
        passed, verdict = False, str(e)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup must not be cut short
        if run:
            if not passed:  # before the cleanup, whose closes and shutdown would fill the tail
                for burrowd in run.burrowds:
                    burrowd.show_log()
            for cleanup in reversed(run.cleanups):
                try:
                    cleanup()
                except Exception as e:  # noqa: BLE001 - report, go on cleaning
                    say(f"  (cleanup: {e})")
            for burrowd in run.burrowds:
                burrowd.stop()
        say(f"{'PASS' if passed else 'FAIL'} {name}: {verdict}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
