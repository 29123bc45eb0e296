#!/usr/bin/env bash
# Drives real third-party SOCKS clients (curl, PySocks, ncat, OpenBSD nc, proxychains4) and HTTP
# proxy clients (curl -x, wget, Python urllib, git, apt, pip) through the release burrowd binary (or the one BURROWD names: `BURROWD=path/to/burrowd bash scripts/interop.sh`)
# and checks the bytes that arrive, not just exit codes. Prints one line per check
# (`PASS name` / `FAIL name: reason`), then `N passed, N failed`; exits non-zero on any failure.
#
# Installs what it lacks: Debian packages with apt-get (ncat, curl, python3, python3-pip,
# netcat-openbsd, proxychains4, wget, git, openssl) and
# PySocks with pip into target/interop-python. Safe to run again.
#
# NETWORK RULE: every address used here is loopback (127.0.0.1, ::1, localhost). Nothing else.
#
# To add a check: start what it needs in the setup section, write a function that returns
# non-zero and prints one line saying why when the client saw the wrong thing, then call
# `check "name" that_function args...` in the checks section.

set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
# A proxy or no-proxy setting in the environment must not reroute or bypass the clients under test.
unset http_proxy https_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY

# A relative BURROWD is relative to where the script was started.
if [[ -n ${BURROWD:-} && -e $BURROWD ]]; then
  BURROWD=$(cd "$(dirname "$BURROWD")" && pwd)/$(basename "$BURROWD")
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
target_dir=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/burrowd-interop.XXXXXX")
pids=()
passed=0
failed=0

# Stops every process this script started (politely, then for sure) and removes the scratch dir.
cleanup() {
  local pid i alive
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for ((i = 0; i < 50; i++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
  echo "$passed passed, $failed failed"
}

# A setup step failed: no check can run meaningfully, so report it as one failure and stop.
die() {
  echo "FAIL setup: $*"
  failed=$((failed + 1))
  summary
  exit 1
}

# check NAME COMMAND...: runs COMMAND (in a subshell: it cannot change this script's variables),
# which prints why on failure, and prints one result line.
check() {
  local name=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if ((rc == 0)); then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    out=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1)
    echo "FAIL $name: ${out:-exit status $rc}"
    failed=$((failed + 1))
  fi
}

skip() {
  echo "SKIP $1: $2"
}

apt_updated=false
apt_install() {
  if ! $apt_updated; then
    apt-get update -qq >/dev/null || return 1
    apt_updated=true
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need COMMAND PACKAGE: installs the Debian PACKAGE unless COMMAND is already on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1)" >&2
  apt_install "$2" && command -v "$1" >/dev/null 2>&1
}

# start NAME COMMAND...: runs COMMAND in the background with its output in $work/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

# await_log NAME SED_SCRIPT: waits (bounded, polling) until the log of process NAME has a line the
# sed script prints, and sets `ready` to that. Fails early if the process has exited.
await_log() {
  local name=$1 script=$2 pid=${pids[-1]} i
  for ((i = 0; i < 300; i++)); do
    # The log may not exist yet: the process that writes it has only just been started.
    ready=$(sed -n "$script" "$work/$name.log" 2>/dev/null | head -n 1)
    [[ -n $ready ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not become ready; its log:" >&2
  sed 's/^/  /' "$work/$name.log" >&2
  return 1
}

# start_burrowd NAME HOST ARGS...: the binary under test listening on HOST with ARGS; sets `ready` to
# the address it reports (the OS picks the port, so it is free by construction).
start_burrowd() {
  local name=$1 host=$2
  shift 2
  [[ $host == *:* ]] && host="[$host]"
  start "$name" env RUST_LOG=info "$burrowd" --listen "$host:0" "$@"
  await_log "$name" 's/.* listening on \([^ ]*:[0-9][0-9]*\):.*/\1/p'
}

# start_http NAME HOST: serves $work/www from HOST only; sets `ready` to its port.
start_http() {
  start "$1" python3 -u -m http.server --bind "$2" --directory "$work/www" 0
  await_log "$1" 's/^Serving HTTP on .* port \([0-9]*\).*/\1/p'
}

# start_echo NAME HOST: a TCP server on HOST that sends back everything it reads and closes after
# the client's FIN; sets `ready` to its port.
start_echo() {
  start "$1" python3 -u "$work/echo_server.py" "$2"
  await_log "$1" 's/^port \([0-9]*\)$/\1/p'
}

sha_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# same_bytes EXPECTED GOT: fails saying how they differ.
same_bytes() {
  cmp -s "$1" "$2" && return 0
  echo "got $(wc -c <"$2") bytes sha256 $(sha_of "$2"), want $(wc -c <"$1") bytes sha256 $(sha_of "$1")"
  return 1
}

# curl_gets_blob CURL_ARGS...: fetches the URL (last argument) and compares it with the served file.
curl_gets_blob() {
  local got
  got=$(mktemp "$work/got.XXXXXX")
  curl --silent --show-error --fail --max-time 20 --output "$got" "$@" || return 1
  same_bytes "$blob" "$got"
}

# curl_rejected CURL_ARGS...: the proxy must refuse: curl reports a SOCKS failure (exit 97,
# CURLE_PROXY) and no body arrives.
curl_rejected() {
  local got rc
  got=$(mktemp "$work/got.XXXXXX")
  curl --silent --show-error --max-time 20 --output "$got" "$@"
  rc=$?
  if ((rc != 97)); then
    echo "curl exit status $rc, want 97 (proxy refused)"
    return 1
  fi
  if [[ -s $got ]]; then
    echo "a body of $(wc -c <"$got") bytes arrived"
    return 1
  fi
}

# pysocks MODE PROXY TARGET_HOST TARGET_PORT [USER PASS]: see pysocks_client.py.
pysocks() {
  timeout 30 python3 "$work/pysocks_client.py" "$@"
}

# pysocks_rejected ARGS...: as pysocks, but the proxy must refuse the login.
pysocks_rejected() {
  local out
  if out=$(pysocks "$@" 2>&1); then
    echo "the proxy accepted the login"
    return 1
  fi
  grep -q SOCKS5AuthError <<<"$out" && return 0
  printf '%s\n' "$out" | tail -n 1
  return 1
}

# pysocks_udp PROXY TARGET_HOST TARGET_PORT [USER PASS]: see pysocks_udp.py.
pysocks_udp() {
  timeout 30 python3 "$work/pysocks_udp.py" "$@"
}

# ncat_echo NCAT_ARGS...: sends the payload through ncat (last arguments: echo host and port) and
# compares what comes back.
ncat_echo() {
  local got
  got=$(mktemp "$work/got.XXXXXX")
  timeout 30 ncat --proxy-type socks5 "$@" <"$payload" >"$got" || return 1
  same_bytes "$payload" "$got"
}

# echo_through COMMAND...: runs COMMAND with the payload on stdin; COMMAND must carry it to the echo
# server, pass the end of stdin on as a FIN and stop at the echo's FIN. Compares what comes back.
echo_through() {
  local got
  got=$(mktemp "$work/got.XXXXXX")
  timeout 30 "$@" <"$payload" >"$got" || return 1
  same_bytes "$payload" "$got"
}

# proxychained TYPE PROXY URL: curl under proxychains4 with a config that names only PROXY
# (HOST:PORT, TYPE socks4 or socks5) and proxy_dns. The body must match, and the `chain` burrowd
# must log a session for the URL's host and port, so a curl that went around the proxy fails.
proxychained() {
  local type=$1 proxy=$2 url=$3 conf got hostport i
  conf=$(mktemp "$work/proxychains.XXXXXX")
  printf '%s\n' strict_chain quiet_mode proxy_dns "tcp_read_time_out 15000" "tcp_connect_time_out 8000" \
    "[ProxyList]" "$type ${proxy%:*} ${proxy##*:}" >"$conf"
  got=$(mktemp "$work/got.XXXXXX")
  timeout 30 proxychains4 -q -f "$conf" curl --silent --show-error --fail --output "$got" "$url" || return 1
  same_bytes "$blob" "$got" || return 1
  hostport=${url#http://}
  hostport=${hostport%%/*}
  # The session's log line is written when both directions have closed, just after curl exits.
  for ((i = 0; i < 50; i++)); do
    grep -q "CONNECT $hostport " "$work/chain.log" && return 0
    sleep 0.1
  done
  echo "burrowd logged no CONNECT $hostport: the request did not go through the proxy"
  return 1
}


# sessions_logged NAME METHOD HOSTPORT: how many sessions METHOD HOSTPORT the burrowd called NAME
# has logged so far.
sessions_logged() {
  grep -c " $2 $3 " "$work/$1.log"
}

# logged_through NAME METHOD HOSTPORT BEFORE: the burrowd called NAME logged more sessions METHOD
# HOSTPORT than BEFORE, so a client that went around the proxy fails. Log lines are written as
# sessions end, just after the client exits.
logged_through() {
  local i
  for ((i = 0; i < 50; i++)); do
    (($(sessions_logged "$1" "$2" "$3") > $4)) && return 0
    sleep 0.1
  done
  echo "burrowd ($1) logged no new $2 $3: the request did not go through the proxy"
  return 1
}

# curl_http_proxied NAME CURL_ARGS...: curl_gets_blob, and the burrowd called NAME must have
# logged the request (GET for a forwarded URL, CONNECT for a tunnel: -p or https).
curl_http_proxied() {
  local name=$1 method=GET url=${*: -1} hostport before
  shift
  [[ " $* " == *" -p "* || $url == https://* ]] && method=CONNECT
  hostport=${url#*://}
  hostport=${hostport%%/*}
  before=$(sessions_logged "$name" "$method" "$hostport")
  curl_gets_blob "$@" || return 1
  logged_through "$name" "$method" "$hostport" "$before"
}

# curl_http_status WANT CURL_ARGS...: the HTTP proxy must answer WANT itself (407, ...), for a
# forwarded request or a CONNECT, and no body of the target's arrives.
curl_http_status() {
  local want=$1 got codes
  shift
  got=$(mktemp "$work/got.XXXXXX")
  codes=$(curl --silent --max-time 20 --output "$got" --write-out '%{http_code} %{http_connect}' "$@")
  if [[ " $codes " != *" $want "* ]]; then
    echo "status (forwarded, CONNECT) $codes, want $want"
    return 1
  fi
  if cmp -s "$blob" "$got"; then
    echo "the target's body arrived"
    return 1
  fi
}

# curl_http_closed CURL_ARGS...: the proxy closes without a reply (--no-http): curl reports an
# empty reply (52) or a failed receive (56), and nothing arrives.
curl_http_closed() {
  local got rc
  got=$(mktemp "$work/got.XXXXXX")
  curl --silent --max-time 20 --output "$got" "$@"
  rc=$?
  if ((rc != 52 && rc != 56)); then
    echo "curl exit status $rc, want 52 or 56 (closed without a reply)"
    return 1
  fi
  [[ ! -s $got ]] || { echo "a body arrived"; return 1; }
}

# wget_proxied NAME PROXY_URL URL [WGET_ARGS...]: wget with http_proxy and https_proxy set to
# PROXY_URL fetches the blob; the burrowd called NAME logged it.
wget_proxied() {
  local name=$1 proxy=$2 url=$3 got method=GET hostport before
  shift 3
  [[ $url == https://* ]] && method=CONNECT
  hostport=${url#*://}
  hostport=${hostport%%/*}
  before=$(sessions_logged "$name" "$method" "$hostport")
  got=$(mktemp "$work/got.XXXXXX")
  http_proxy=$proxy https_proxy=$proxy timeout 30 wget --quiet --tries=1 --output-document="$got" "$@" "$url" ||
    { echo "wget exit status $?"; return 1; }
  same_bytes "$blob" "$got" || return 1
  logged_through "$name" "$method" "$hostport" "$before"
}

# urllib_proxied NAME PROXY_URL URL: Python's urllib with that proxy for http and https.
urllib_proxied() {
  local name=$1 method=GET hostport=${3#*://} before
  [[ $3 == https://* ]] && method=CONNECT
  hostport=${hostport%%/*}
  before=$(sessions_logged "$name" "$method" "$hostport")
  timeout 30 python3 "$work/urllib_client.py" "$2" "$3" || return 1
  logged_through "$name" "$method" "$hostport" "$before"
}

# git_clone_proxied NAME PROXY_URL: git clones the dumb HTTP repository with http.proxy and must
# find its one commit.
git_clone_proxied() {
  local dest before
  before=$(sessions_logged "$1" GET "127.0.0.1:$http4")
  dest=$(mktemp -d "$work/clone.XXXXXX")
  rmdir "$dest"
  timeout 60 git -c http.proxy="$2" clone --quiet "http://127.0.0.1:$http4/repo.git" "$dest" ||
    { echo "git clone failed"; return 1; }
  [[ $(git -C "$dest" log --format=%s) == "interop commit" ]] || { echo "the clone has no interop commit"; return 1; }
  logged_through "$1" GET "127.0.0.1:$http4" "$before"
}

# apt_proxied NAME PROXY_URL: apt-get update and download from the flat repository with
# Acquire::http::Proxy, under a state and cache of its own (the system's are not touched).
apt_proxied() {
  local dir before
  before=$(sessions_logged "$1" GET "127.0.0.1:$http4")
  dir=$(mktemp -d "$work/apt.XXXXXX")
  mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial" "$dir/parts" "$dir/download"
  echo "deb [trusted=yes] http://127.0.0.1:$http4/apt ./" >"$dir/sources.list"
  touch "$dir/status"
  local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=$dir/parts"
    -o "Dir::State=$dir/state" -o "Dir::Cache=$dir/cache" -o "Dir::State::status=$dir/status"
    -o "Acquire::http::Proxy=$2" -o Debug::NoLocking=1 -o APT::Sandbox::User=root
    -o Acquire::Languages=none -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false)
  timeout 60 apt-get "${opts[@]}" -qq update >"$dir/update.log" 2>&1 || { tail -n 1 "$dir/update.log"; return 1; }
  (cd "$dir/download" && timeout 60 apt-get "${opts[@]}" -qq download burrowd-interop) >"$dir/download.log" 2>&1 ||
    { tail -n 1 "$dir/download.log"; return 1; }
  same_bytes "$work/www/apt/burrowd-interop_1.0_all.deb" "$dir/download/burrowd-interop_1.0_all.deb" || return 1
  logged_through "$1" GET "127.0.0.1:$http4" "$before"
}

# pip_proxied NAME PROXY_URL: pip downloads the tiny wheel from the simple index with --proxy.
pip_proxied() {
  local dest before
  before=$(sessions_logged "$1" GET "127.0.0.1:$http4")
  dest=$(mktemp -d "$work/pip.XXXXXX")
  timeout 60 python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps \
    --index-url "http://127.0.0.1:$http4/simple/" --trusted-host "127.0.0.1" --proxy "$2" \
    --dest "$dest" burrowd-interop >"$dest/pip.log" 2>&1 || { tail -n 1 "$dest/pip.log"; return 1; }
  same_bytes "$work/www/simple/burrowd-interop/burrowd_interop-1.0-py3-none-any.whl" \
    "$dest/burrowd_interop-1.0-py3-none-any.whl" || return 1
  logged_through "$1" GET "127.0.0.1:$http4" "$before"
}

# ---------------------------------------------------------------- setup

need curl curl || die "cannot install curl"
need ncat ncat || die "cannot install ncat"
need nc.openbsd netcat-openbsd || die "cannot install netcat-openbsd"
need proxychains4 proxychains4 || die "cannot install proxychains4"
need python3 python3 || die "cannot install python3"
need promtool prometheus || die "cannot install promtool (prometheus)"
need wget wget || die "cannot install wget"
need git git || die "cannot install git"
need openssl openssl || die "cannot install openssl"
need dpkg-deb dpkg || die "cannot install dpkg-deb"
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip || die "cannot install python3-pip"
# --target keeps PySocks out of the system's Python (and out of Debian's externally-managed check).
pydeps=$target_dir/interop-python
export PYTHONPATH=$pydeps${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c 'import socks' 2>/dev/null; then
  echo "installing PySocks into $pydeps" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$pydeps" PySocks >&2 || die "cannot pip install PySocks"
fi

if [[ -n ${BURROWD:-} ]]; then
  burrowd=$BURROWD
else
  cargo build --release --quiet || die "cargo build --release failed"
  burrowd=$target_dir/release/burrowd
fi
[[ -x $burrowd ]] || die "no executable burrowd at $burrowd"

have_ipv6=false
python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null && have_ipv6=true

mkdir -p "$work/www"
blob=$work/www/blob.bin
head -c $((4 * 1024 * 1024)) /dev/urandom >"$blob"
payload=$work/payload.bin
head -c $((1024 * 1024)) /dev/urandom >"$payload"

cat >"$work/echo_server.py" <<'EOF'
import socket, socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET

with Server((sys.argv[1], 0), Echo) as server:
    print("port", server.server_address[1], flush=True)
    server.serve_forever()
EOF

cat >"$work/pysocks_client.py" <<'EOF'
# Usage: MODE PROXY TARGET_HOST TARGET_PORT [USER PASSWORD], PROXY as 127.0.0.1:1080 or [::1]:1080.
# MODE http: GET /blob.bin through the proxy and compare the body with BLOB's bytes.
# MODE echo: send PAYLOAD, half-close, read until EOF and compare.
# A TARGET_HOST that is not an IP address is sent to the proxy to resolve (rdns).
import hashlib, os, socket, sys, socks

mode, proxy, host, port, *login = sys.argv[1:]
user, password = login if login else (None, None)
proxy_host, _, proxy_port = proxy.rpartition(":")
proxy_host = proxy_host.strip("[]")
s = socks.socksocket(socket.AF_INET6 if ":" in proxy_host else socket.AF_INET)
s.settimeout(20)
s.set_proxy(socks.SOCKS5, proxy_host, int(proxy_port), rdns=True, username=user, password=password)
s.connect((host, int(port)))
if mode == "http":
    want = open(os.environ["BLOB"], "rb").read()
    s.sendall(f"GET /blob.bin HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
else:
    want = open(os.environ["PAYLOAD"], "rb").read()
    s.sendall(want)
    s.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := s.recv(65536):
    got += chunk
s.close()
if mode == "http":
    head, _, got = bytes(got).partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode(errors="replace")
    if " 200 " not in status:
        sys.exit(f"status line {status!r}")
if got != want:
    sys.exit(f"got {len(got)} bytes sha256 {hashlib.sha256(got).hexdigest()}, "
             f"want {len(want)} bytes sha256 {hashlib.sha256(want).hexdigest()}")
EOF
cat >"$work/dns_echo.py" <<'EOF'
# A loopback UDP server that answers each DNS query for an A record the way a resolver would:
# the same ID and question, QR set, one answer 127.0.0.1. Anything else is echoed as it came.
import socket, struct, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print("port", s.getsockname()[1], flush=True)
while True:
    query, peer = s.recvfrom(65535)
    if len(query) < 12 or struct.unpack("!H", query[4:6])[0] != 1:
        s.sendto(query, peer)
        continue
    ident, flags = struct.unpack("!HH", query[:4])
    header = struct.pack("!HHHHHH", ident, flags | 0x8080, 1, 1, 0, 0)  # QR, RA
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    s.sendto(header + query[12:] + answer, peer)
EOF

cat >"$work/pysocks_udp.py" <<'EOF'
# Usage: PROXY TARGET_HOST TARGET_PORT [USER PASSWORD], PROXY as 127.0.0.1:1080.
# A DNS query for burrowd.test (type A) through UDP ASSOCIATE with PySocks; the reply must carry
# the query's ID and question, QR set, the answer 127.0.0.1, and come labelled from the server.
import random, socket, struct, sys, socks

proxy, host, port, *login = sys.argv[1:]
user, password = login if login else (None, None)
proxy_host, _, proxy_port = proxy.rpartition(":")
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.set_proxy(socks.SOCKS5, proxy_host, int(proxy_port), rdns=True, username=user, password=password)
ident = random.randrange(1 << 16)
question = b"".join(bytes([len(p)]) + p for p in (b"burrowd", b"test")) + b"\0" + struct.pack("!HH", 1, 1)
query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question
s.sendto(query, (host, int(port)))
reply, source = s.recvfrom(65535)
if source[1] != int(port):
    sys.exit(f"reply labelled {source}, want port {port}")
got_id, flags, qd, an = struct.unpack("!HHHH", reply[:8])
if got_id != ident or not flags & 0x8000 or (qd, an) != (1, 1):
    sys.exit(f"not the answer to our query: id {got_id} (want {ident}) flags {flags:#x} qd {qd} an {an}")
if reply[12:12 + len(question)] != question:
    sys.exit("question not echoed")
if socket.inet_ntoa(reply[-4:]) != "127.0.0.1":
    sys.exit(f"answer {socket.inet_ntoa(reply[-4:])}, want 127.0.0.1")
EOF
export BLOB=$blob PAYLOAD=$payload

# HTTP proxy targets: an HTTPS server (a self-signed certificate for localhost and 127.0.0.1)
# for CONNECT; a dumb HTTP git repository, a flat apt repository and a simple pip index, all
# served by the plain HTTP server from $work/www.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null ||
  die "cannot make a certificate"
export CERT=$work/cert.pem
cat >"$work/https_server.py" <<'EOF'
import functools, http.server, ssl, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1] + "/cert.pem", sys.argv[1] + "/key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("port", server.server_address[1], flush=True)
server.serve_forever()
EOF
cat >"$work/urllib_client.py" <<'EOF'
# Usage: PROXY_URL URL: fetch URL with urllib through PROXY_URL (http and https) and compare the
# body with BLOB's bytes; a login in PROXY_URL goes as Proxy-Authorization, CONNECT included.
import os, ssl, sys, urllib.request
proxy, url = sys.argv[1:]
context = ssl.create_default_context(cafile=os.environ["CERT"])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
                                     urllib.request.HTTPSHandler(context=context))
got = opener.open(url, timeout=20).read()
want = open(os.environ["BLOB"], "rb").read()
if got != want:
    sys.exit(f"got {len(got)} bytes, want {len(want)}")
EOF
repo_src=$work/repo-src
git init --quiet "$repo_src" && git -C "$repo_src" -c user.name=interop -c user.email=interop@localhost \
  commit --quiet --allow-empty -m "interop commit" || die "cannot make a git repository"
git clone --quiet --bare "$repo_src" "$work/www/repo.git" && git -C "$work/www/repo.git" update-server-info ||
  die "cannot make the dumb HTTP repository"
mkdir -p "$work/deb/DEBIAN" "$work/www/apt"
printf '%s\n' "Package: burrowd-interop" "Version: 1.0" "Architecture: all" "Maintainer: interop <interop@localhost>" \
  "Description: an empty package the interop script fetches through burrowd" >"$work/deb/DEBIAN/control"
dpkg-deb --root-owner-group --build "$work/deb" "$work/www/apt/burrowd-interop_1.0_all.deb" >/dev/null ||
  die "cannot build the .deb"
python3 - "$work/www/apt" <<'EOF' || die "cannot write the apt Packages index"
import hashlib, os, subprocess, sys
root = sys.argv[1]
deb = "burrowd-interop_1.0_all.deb"
data = open(os.path.join(root, deb), "rb").read()
control = subprocess.run(["dpkg-deb", "--field", os.path.join(root, deb)], capture_output=True, check=True).stdout.decode()
entry = control.rstrip("\n") + f"\nFilename: ./{deb}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
open(os.path.join(root, "Packages"), "w").write(entry)
EOF
python3 - "$work/www/simple" <<'EOF' || die "cannot build the wheel and the simple index"
import base64, hashlib, os, sys, zipfile
root = sys.argv[1]
os.makedirs(os.path.join(root, "burrowd-interop"))
name = "burrowd_interop-1.0-py3-none-any.whl"
files = {
    "burrowd_interop/__init__.py": b"",
    "burrowd_interop-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: burrowd-interop\nVersion: 1.0\n",
    "burrowd_interop-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: interop.sh\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(
    f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
    for path, data in files.items()) + "burrowd_interop-1.0.dist-info/RECORD,,\n"
path = os.path.join(root, "burrowd-interop", name)
with zipfile.ZipFile(path, "w") as wheel:
    for member, data in files.items():
        wheel.writestr(member, data)
    wheel.writestr("burrowd_interop-1.0.dist-info/RECORD", record)
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
open(os.path.join(root, "burrowd-interop", "index.html"), "w").write(
    f'<!DOCTYPE html><html><body><a href="{name}#sha256={digest}">{name}</a></body></html>\n')
open(os.path.join(root, "index.html"), "w").write(
    '<!DOCTYPE html><html><body><a href="burrowd-interop/">burrowd-interop</a></body></html>\n')
EOF

user=interop
password='s3cret-pa55'
start_http http4 127.0.0.1 || die "http server on 127.0.0.1 did not start"
http4=$ready
start_echo echo4 127.0.0.1 || die "echo server on 127.0.0.1 did not start"
echo4=$ready
start "dns4" python3 -u "$work/dns_echo.py" 127.0.0.1
await_log dns4 's/^port \([0-9]*\)$/\1/p' || die "UDP DNS echo server on 127.0.0.1 did not start"
dns4=$ready
start_burrowd open 127.0.0.1 || die "burrowd did not start"
open=$ready
start_burrowd auth 127.0.0.1 --user "$user:$password" || die "burrowd --user did not start"
auth=$ready
start_burrowd auth4 127.0.0.1 --user "$user:$password" --socks4 || die "burrowd --user --socks4 did not start"
auth4=$ready
start_burrowd no4 127.0.0.1 --no-socks4 || die "burrowd --no-socks4 did not start"
no4=$ready
start_burrowd chain 127.0.0.1 || die "burrowd for proxychains did not start"
chain=$ready
if $have_ipv6; then
  start_http http6 ::1 || die "http server on ::1 did not start"
  http6=$ready
  start_burrowd open6 ::1 || die "burrowd on [::1] did not start"
  open6=$ready
  start_burrowd auth6 ::1 --user "$user:$password" || die "burrowd --user on [::1] did not start"
  auth6=$ready
fi
url4=http://127.0.0.1:$http4/blob.bin
url_name=http://localhost:$http4/blob.bin
# A second burrowd whose outbound connections go through the `auth` one (-F), with a tcp://
# forward to the HTTP server by name; and one whose upstream password is wrong.
start_burrowd front 127.0.0.1 -F "socks5://$user:$password@$auth" -L "tcp://127.0.0.1:0/localhost:$http4" ||
  die "burrowd -F did not start"
front=$ready
await_log front 's/.* listening on \([^ ]*\): forward to .*/\1/p' || die "burrowd -L tcp:// did not start"
forward=$ready
start_burrowd badfront 127.0.0.1 -F "socks5://$user:wrong@$auth" || die "burrowd -F (wrong password) did not start"
badfront=$ready
start "https4" python3 -u "$work/https_server.py" "$work" "$work/www"
await_log https4 's/^port \([0-9]*\)$/\1/p' || die "https server on 127.0.0.1 did not start"
https4=$ready
start_burrowd nohttp 127.0.0.1 --no-http || die "burrowd --no-http did not start"
nohttp=$ready
# Outbound through the `auth` burrowd's HTTP side: -F http:// with a Basic login.
start_burrowd httpfront 127.0.0.1 -F "http://$user:$password@$auth" || die "burrowd -F http:// did not start"
httpfront=$ready
start_burrowd watched 127.0.0.1 --status 127.0.0.1:0 || die "burrowd --status did not start"
watched=$ready
await_log watched 's|.* status pages on http://\([^/]*\)/sessions.*|\1|p' || die "burrowd --status did not listen"
status=$ready

# status_sessions_match_ss: holds a session through the `watched` burrowd with ncat, then reads
# /sessions with curl; its relay line's two legs (client and outbound) must be in `ss -tn`.
status_sessions_match_ss() {
  local holder line i client local_addr out_local out_peer
  (sleep 5 | ncat --proxy "$watched" --proxy-type socks5 127.0.0.1 "$echo4" >/dev/null 2>&1) &
  holder=$!
  for ((i = 0; i < 100; i++)); do
    line=$(curl -sS --max-time 2 "http://$status/sessions" | awk '$2 == "relay"' | head -n 1)
    [[ -n $line ]] && break
    sleep 0.05
  done
  if [[ -z $line ]]; then
    echo "no relay line in /sessions"
    kill "$holder" 2>/dev/null
    return 1
  fi
  read -r _ _ client local_addr _ _ _ out_local out_peer _ <<<"$line"
  local ss_out
  ss_out=$(ss -tnH)
  kill "$holder" 2>/dev/null
  grep -q "$local_addr *$client" <<<"$ss_out" || { echo "client leg $local_addr $client not in ss: $line"; return 1; }
  grep -q "$out_local *$out_peer" <<<"$ss_out" || { echo "outbound leg $out_local $out_peer not in ss: $line"; return 1; }
}

status_metrics_pass_promtool() {
  local metrics problems
  metrics=$(curl -sS --max-time 2 "http://$status/metrics") || { echo "GET /metrics failed"; return 1; }
  grep -q '^burrowd_sessions_total{outcome="closed"}' <<<"$metrics" || { echo "no burrowd_sessions_total"; return 1; }
  problems=$(promtool check metrics <<<"$metrics" 2>&1) || { echo "promtool: $problems"; return 1; }
  [[ -z $problems ]] || { echo "promtool: $problems"; return 1; }
}

# ---------------------------------------------------------------- checks

check "curl --socks5" curl_gets_blob --socks5 "$open" "$url4"
check "curl --socks5-hostname" curl_gets_blob --socks5-hostname "$open" "$url_name"
check "curl --socks5 --proxy-user" curl_gets_blob --socks5 "$auth" --proxy-user "$user:$password" "$url4"
check "curl --socks5-hostname --proxy-user" \
  curl_gets_blob --socks5-hostname "$auth" --proxy-user "$user:$password" "$url_name"
check "curl --socks5 wrong password rejected" curl_rejected --socks5 "$auth" --proxy-user "$user:wrong" "$url4"
check "curl --socks5 no login rejected by --user proxy" curl_rejected --socks5 "$auth" "$url4"

check "pysocks http" pysocks http "$open" 127.0.0.1 "$http4"
check "pysocks http by name (resolved by burrowd)" pysocks http "$open" localhost "$http4"
check "pysocks http login" pysocks http "$auth" 127.0.0.1 "$http4" "$user" "$password"
check "pysocks wrong password rejected" \
  pysocks_rejected http "$auth" 127.0.0.1 "$http4" "$user" wrong
check "pysocks echo with half-close" pysocks echo "$open" 127.0.0.1 "$echo4"

check "pysocks udp associate dns query" pysocks_udp "$open" 127.0.0.1 "$dns4"
check "pysocks udp associate dns query by name (resolved by burrowd)" pysocks_udp "$open" localhost "$dns4"
check "pysocks udp associate dns query with login" pysocks_udp "$auth" 127.0.0.1 "$dns4" "$user" "$password"

check "ncat --proxy-type socks5 echo" ncat_echo --proxy "$open" 127.0.0.1 "$echo4"
check "ncat --proxy-type socks5 --proxy-auth echo" \
  ncat_echo --proxy "$auth" --proxy-auth "$user:$password" 127.0.0.1 "$echo4"

check "curl --socks4" curl_gets_blob --socks4 "$open" "$url4"
check "curl --socks4a" curl_gets_blob --socks4a "$open" "$url_name"
check "curl --socks4 refused by --user proxy" curl_rejected --socks4 "$auth" "$url4"
check "curl --socks4a served by --user --socks4 proxy" curl_gets_blob --socks4a "$auth4" "$url_name"
check "curl --socks4 closed by --no-socks4 proxy" curl_rejected --socks4 "$no4" "$url4"
check "curl --socks5 still served by --no-socks4 proxy" curl_gets_blob --socks5-hostname "$no4" "$url_name"

check "nc.openbsd -X 4 echo with half-close" echo_through nc.openbsd -N -X 4 -x "$open" 127.0.0.1 "$echo4"
check "nc.openbsd -X 5 echo with half-close" echo_through nc.openbsd -N -X 5 -x "$open" 127.0.0.1 "$echo4"
check "ncat --proxy-type socks4 echo" \
  echo_through ncat --proxy-type socks4 --proxy "$open" 127.0.0.1 "$echo4"

check "proxychains4 socks5 curl" proxychained socks5 "$chain" "$url4"
check "proxychains4 socks4 curl" proxychained socks4 "$chain" "$url4"
# No by-name check: proxychains answers names found in /etc/hosts (localhost) itself, even with
# proxy_dns, and a loopback-only script has no other name to offer.

check "curl --socks5-hostname through a burrowd chain" curl_gets_blob --socks5-hostname "$front" "$url_name"
check "curl through -L tcp:// forwarded via the chain" curl_gets_blob "http://$forward/blob.bin"
check "ncat --proxy-type socks5 echo through a burrowd chain" ncat_echo --proxy "$front" 127.0.0.1 "$echo4"
check "curl --socks5 refused when the upstream rejects our password" curl_rejected --socks5 "$badfront" "$url4"

# HTTP proxy clients, on the same ports as the SOCKS ones above (`open` and `auth` are --listen
# ports, which serve both).
url_tls=https://localhost:$https4/blob.bin
proxy_login=http://$user:$password@$auth
check "curl -x http:// GET" curl_http_proxied open -x "http://$open" "$url4"
check "curl -x http:// -p (CONNECT)" curl_http_proxied open -p -x "http://$open" "$url4"
check "curl -x http:// https (CONNECT, TLS)" curl_http_proxied open --cacert "$CERT" -x "http://$open" "$url_tls"
check "curl -x http:// --proxy-user GET" curl_http_proxied auth -x "http://$auth" --proxy-user "$user:$password" "$url4"
check "curl -x http:// --proxy-user https (CONNECT)" \
  curl_http_proxied auth --cacert "$CERT" -x "http://$auth" --proxy-user "$user:$password" "$url_tls"
check "curl -x http:// no login gets 407" curl_http_status 407 -x "http://$auth" "$url4"
check "curl -x http:// wrong password gets 407 on CONNECT" \
  curl_http_status 407 -p -x "http://$auth" --proxy-user "$user:wrong" "$url4"
check "curl -x http:// closed by --no-http proxy" curl_http_closed -x "http://$nohttp" "$url4"
check "curl --socks5 still served by --no-http proxy" curl_gets_blob --socks5 "$nohttp" "$url4"
check "curl --socks5-hostname through -F http:// (CONNECT with login)" \
  curl_gets_blob --socks5-hostname "$httpfront" "$url_name"
check "wget http_proxy" wget_proxied open "http://$open" "$url4"
check "wget https_proxy (CONNECT)" wget_proxied open "http://$open" "$url_tls" --ca-certificate="$CERT"
check "wget http_proxy with login" wget_proxied auth "$proxy_login" "$url4"
check "wget https_proxy with login" wget_proxied auth "$proxy_login" "$url_tls" --ca-certificate="$CERT"
check "python urllib http proxy" urllib_proxied open "http://$open" "$url4"
check "python urllib https through CONNECT" urllib_proxied open "http://$open" "$url_tls"
check "python urllib with login" urllib_proxied auth "$proxy_login" "$url4"
check "python urllib https with login" urllib_proxied auth "$proxy_login" "$url_tls"
check "git clone with http.proxy (dumb HTTP)" git_clone_proxied open "http://$open"
check "git clone with http.proxy and login" git_clone_proxied auth "$proxy_login"
check "apt-get update and download with Acquire::http::Proxy" apt_proxied open "http://$open"
check "apt-get with Acquire::http::Proxy and login" apt_proxied auth "$proxy_login"
check "pip download --proxy from a simple index" pip_proxied open "http://$open"
check "pip download --proxy with login" pip_proxied auth "$proxy_login"

check "curl reads /sessions and every leg is in ss -tn" status_sessions_match_ss
check "curl reads /metrics and promtool check metrics finds nothing" status_metrics_pass_promtool

if $have_ipv6; then
  url6="http://[::1]:$http6/blob.bin"
  check "ipv6 curl --socks5 [::1] proxy to [::1] target" curl_gets_blob --socks5 "$open6" "$url6"
  check "ipv6 curl --socks5-hostname [::1] proxy" curl_gets_blob --socks5-hostname "$open6" "$url_name"
  check "ipv6 curl --socks5 [::1] proxy --proxy-user" \
    curl_gets_blob --socks5 "$auth6" --proxy-user "$user:$password" "$url6"
  check "ipv6 pysocks 127.0.0.1 proxy to [::1] target" \
    pysocks http "$open" ::1 "$http6"
  check "ipv6 pysocks [::1] proxy echo" pysocks echo "$open6" 127.0.0.1 "$echo4"
  check "ipv6 ncat [::1] proxy echo" ncat_echo --proxy "$open6" 127.0.0.1 "$echo4"
else
  skip ipv6 "::1 is not available on this machine"
fi

if ((failed)); then
  for name in open auth auth4 no4 chain front badfront nohttp httpfront watched open6 auth6; do
    [[ -f $work/$name.log ]] || continue
    echo "--- last lines of burrowd ($name) log:" >&2
    tail -n 20 "$work/$name.log" >&2
  done
fi
summary
((failed == 0))
