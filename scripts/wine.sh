#!/usr/bin/env bash
# The Windows build, checked under Wine: builds burrowd.exe with MinGW (x86_64-pc-windows-gnu),
# then runs against it scripts/interop.sh, a Ctrl-C check (drain, summary line, exit 0), and the
# integration tests built for Windows, less those Wine cannot run (listed below with why).
# Prints `PASS`/`FAIL` per step, then `N passed, N failed`; exits non-zero on any failure.
#
# Installs what it lacks: wine64 and gcc-mingw-w64-x86-64 with apt-get, the Rust target with
# rustup. Wine's files go to target/wine (its prefix is made on the first run, about 10 s).
#
# NETWORK RULE: every address used here is loopback, as in the scripts and tests it runs.

set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
target_dir=${CARGO_TARGET_DIR:-$root/target}
triple=x86_64-pc-windows-gnu
wine_dir=$target_dir/wine
passed=0
failed=0

step() {
  local name=$1
  shift
  if "$@"; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}

summary() {
  echo "wine: $passed passed, $failed failed"
  ((failed == 0))
}

die() {
  echo "FAIL setup: $*"
  failed=$((failed + 1))
  summary
  exit 1
}

if [[ ! -x /usr/lib/wine/wine64 ]] || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  echo "installing wine64 and gcc-mingw-w64-x86-64" >&2
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends wine64 gcc-mingw-w64-x86-64; } >&2 ||
    die "cannot install wine64 and gcc-mingw-w64-x86-64"
fi
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2 ||
  die "cannot add the Rust target $triple"

mkdir -p "$wine_dir"
export WINEPREFIX=$wine_dir/prefix WINEDEBUG=-all
wine=/usr/lib/wine/wine64
# Rust 1.78 and later take random bytes from ProcessPrng (bcryptprimitives.dll), which Windows 10
# has and Wine only from 8.13 on; Debian 12 ships 8.0, where the exe would not start (exit 53).
# For these checks only, a stand-in DLL built from scripts/wine/bcryptprimitives.c forwards it to
# RtlGenRandom. It is never part of what burrowd ships.
wine_version=$("$wine" --version 2>/dev/null | sed -n 's/^wine-\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r wine_major wine_minor <<<"${wine_version:-0 0}"
if ((wine_major < 8 || (wine_major == 8 && wine_minor < 13))); then
  x86_64-w64-mingw32-gcc -shared -s -O2 -o "$wine_dir/bcryptprimitives.dll" \
    scripts/wine/bcryptprimitives.c -ladvapi32 || die "cannot build the ProcessPrng stand-in DLL"
  export WINEPATH="Z:${wine_dir//\//\\}" WINEDLLOVERRIDES=bcryptprimitives=n,b
fi

cargo build --release --quiet --target "$triple" || die "cargo build --release --target $triple failed"
exe=$target_dir/$triple/release/burrowd.exe
# One wineserver for the whole run, started before any Wine program (which would start one
# of its own): by default it exits a few seconds after its last client, and a test program
# that starts just then loses its connection to it ("wine client error: recvmsg: Connection
# reset by peer") and fails through no fault of its own.
wineserver=/usr/lib/wine/wineserver64
[[ -x $wineserver ]] || wineserver=/usr/lib/wine/wineserver
mkdir -p "$WINEPREFIX" # the server runs in it; wineboot fills it
"$wineserver" -k 2>/dev/null
"$wineserver" -p || die "cannot start a persistent wineserver"
trap '"$wineserver" -k 2>/dev/null' EXIT
"$wine" wineboot --init >/dev/null 2>&1
"$wine" "$exe" --version >/dev/null 2>&1 || die "$exe does not start under $("$wine" --version)"

# The scripts take one executable: this one runs the exe under Wine as the same process (exec),
# so their signals reach it.
wrapper=$wine_dir/burrowd
printf '#!/bin/sh\nexec %s %s "$@"\n' "$wine" "$exe" >"$wrapper"
chmod +x "$wrapper"

step "interop.sh against burrowd.exe" env BURROWD="$wrapper" bash scripts/interop.sh

# Wine turns SIGINT into the console's Ctrl-C event, as pressing Ctrl-C does on Windows.
ctrl_c_drains() {
  python3 - "$wrapper" <<'EOF'
import socket, struct, subprocess, sys, threading

echo = socket.create_server(("127.0.0.1", 0))
def serve():
    conn, _ = echo.accept()
    while data := conn.recv(4096):
        conn.sendall(data)
    conn.close()
threading.Thread(target=serve, daemon=True).start()

proxy = subprocess.Popen([sys.argv[1], "--listen", "127.0.0.1:0", "--drain-timeout", "10s"],
                         stderr=subprocess.PIPE, text=True)
def line_with(needle):
    for line in proxy.stderr:
        if needle in line:
            return line
    sys.exit(f"burrowd wrote no line with {needle!r}")
try:
    host, port = line_with("listening on ").split("listening on ")[1].split(":")[:2]
    addr = (host, int(port))
    session = socket.create_connection(addr, timeout=10)
    session.sendall(b"\x05\x01\x00")
    assert session.recv(2) == b"\x05\x00"
    session.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", echo.getsockname()[1]))
    assert session.recv(10)[:2] == b"\x05\x00"
    proxy.send_signal(2)  # SIGINT
    line_with("signal received")
    try:
        socket.create_connection(addr, timeout=2).close()
        sys.exit("the listener still accepts after Ctrl-C")
    except OSError:
        pass
    session.sendall(b"still here")
    assert session.recv(10) == b"still here", "the live session stopped during the drain"
    session.shutdown(socket.SHUT_WR)
    assert session.recv(10) == b""
    summary = line_with("shutdown:")
    assert "1 sessions served" in summary, summary
    assert proxy.wait(timeout=10) == 0, f"exit status {proxy.returncode}"
finally:
    proxy.kill()
EOF
}
step "Ctrl-C drains the live session, writes the summary and exits 0" ctrl_c_drains

# Integration tests Wine cannot run, each with why:
skips=(
  # bash and Linux network namespaces, which a Windows program cannot start
  bind_and_udp_associate_work_over_a_link_local_address
  a_subnet_broadcast_through_udp_associate_reaches_the_peer_namespace
  a_black_holed_first_address_costs_one_attempt_delay
  a_remote_client_is_refused_this_hosts_loopback_unless_a_rule_opens_it
  every_outbound_leg_leaves_from_the_chosen_address_and_interface
  # shutting down the accept loop's second handle on a waiting client does not wake, under
  # Wine, the worker blocked reading it, so reclaiming closes no one (real Windows not tried)
  reclaimed_clients_see_a_close_and_sessions_past_the_handshake_are_kept
  silent_clients_from_many_addresses_cannot_lock_out_another
  silent_clients_from_the_valid_clients_own_address_cannot_lock_it_out
  slow_request_heads_are_reclaimed_and_the_handshake_timeout_bounds_a_head
  # datagrams from sockets bound to 127.0.0.2-5 are not seen as coming from there under Wine (a
  # udp:// service answers none of them; a UDP ASSOCIATE relay, now and then, takes one for the
  # client's)
  udp_forward_sessions_are_bounded_and_never_take_socks_workers
  datagrams_from_another_ip_are_dropped
  udp_forward_clients_are_judged_by_address_on_their_first_datagram
  a_client_that_names_its_target_in_dst_and_sends_from_another_port_is_served
  an_association_logs_its_first_foreign_datagram_once_and_names_the_real_client
  the_udp_association_locks_to_the_carried_client
  udp_datagrams_leave_from_the_bind_out_address
  a_udp_forward_leaves_from_its_own_bind_out_address
  # counts /proc/self/fd, which under Wine holds Wine's own descriptors and its cache of them
  after_churn_with_resets_and_abandoned_handshakes_every_descriptor_is_given_back
)
skip_args=()
for name in "${skips[@]}"; do skip_args+=(--skip "$name"); done
export "CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER=$wine"
step "cargo test --target $triple under Wine (${#skips[@]} tests skipped)" \
  cargo test --quiet --no-fail-fast --target "$triple" -- "${skip_args[@]}"

summary
