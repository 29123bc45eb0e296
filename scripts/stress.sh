#!/usr/bin/env bash
# Hostile-peer stress scenarios against the release burrowd binary. Each scenario starts its own
# burrowd (and its own loopback echo or silent server, in scripts/stress.py), prints a few lines
# of figures and `PASS name: ...` or `FAIL name: ...`; the script ends with `N passed, N failed`
# and exits non-zero if any scenario failed.
#
# Usage: scripts/stress.sh [--quick] [SCENARIO...]      (no SCENARIO: all, in this order)
#   stalled-one   10,000 connections from 127.0.0.1 that stall (half send `05 01`), then 20 valid
#                 clients from 127.0.0.1, 100 ms apart; target: each under 1 s (5 s timeout each)
#   stalled-many  the same with the stalled ones from 127.0.0.2 ... 127.0.0.101
#   slow-honest   `burrowd --max-clients 64 --queue 0`; 127.0.0.2 ... 127.0.0.5 each open a silent
#                 connection a millisecond (the newest 64 held), so every worker is taken and each
#                 newcomer closes a client still in its handshake; meanwhile 10 clients from
#                 127.0.0.6 over a 50 ms round trip (each message split, a sleep before each half);
#                 target: all 10 served (the flood makes room out of its own connections)
#   half-dead     200 sessions to a target that accepts and stays silent; the clients close; target:
#                 burrowd frees every descriptor within --half-close-timeout (run with 5s) + 5 s;
#                 a burrowd whose --help lacks that flag runs without it (target still 10 s)
#   fd-limit      `burrowd --max-clients 1500 --max-clients-per-ip 1500` (the clients are all
#                 127.0.0.1) under `prlimit --nofile=1024:20000`, 1,500 idle sessions with a 3 s
#                 deadline each; target: >= 1,400 established, 0 silent
#   churn         20,000 echo sessions, 20 at a time, 1 in 10 reset mid-relay, 1 in 10 abandoned
#                 mid-handshake; target: then 0 CLOSE_WAIT, 0 FIN_WAIT2, fds back to baseline
#   --quick       a tenth of every count (for CI): 1,000 stalled against --max-clients 102 --queue 12
#                 and 5 valid clients, 20 half-dead, 150 sessions under a 102-descriptor soft limit,
#                 2,000 churned
#
# Environment:
#   BURROWD        the binary to test; when unset, `cargo build --release` and target/release/burrowd
#   BURROWD_ARGS   extra flags for every burrowd started (after the scenario's own, so they win)
#   BURROWD_ARGS_<SCENARIO>  extra flags for one scenario, e.g.
#                  BURROWD_ARGS_STALLED_MANY='--max-clients-per-ip 8' (the stalled scenarios pass
#                  no limit flag at full size: they test burrowd's defaults)
#   STRESS_DEADLINE  hard deadline in seconds for each scenario (default: 30-300 by scenario and size)
#   STRESS_FD_HARD the hard descriptor limit of fd-limit (default 20000); below what the sessions
#                  need (4 per session) burrowd can only admit what fits, and the target is 0 silent
#   STRESS_KEEP    when set, keep the scratch directory with every burrowd's log, and say where
#
# Every scenario runs in its own python3 process under a hard deadline (`timeout`, which signals
# burrowd too); a scenario that hangs is killed and counted as failed. Needs python3 (standard
# library only), Linux /proc, prlimit (util-linux; falls back to setrlimit).
#
# NETWORK RULE: everything here is on loopback: 127.0.0.1, and 127.0.0.2-101 as source addresses.

set -uo pipefail
# A proxy setting in the environment must play no part.
unset http_proxy https_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY

# A relative BURROWD is relative to where the script was started.
if [[ -n ${BURROWD:-} && -e $BURROWD ]]; then
  BURROWD=$(cd "$(dirname "$BURROWD")" && pwd)/$(basename "$BURROWD")
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
target_dir=${CARGO_TARGET_DIR:-$root/target}
all=(stalled-one stalled-many slow-honest half-dead fd-limit churn)

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

quick=false
scenarios=()
for arg in "$@"; do
  case $arg in
    --quick) quick=true ;;
    -h | --help)
      usage
      exit 0
      ;;
    stalled-one | stalled-many | slow-honest | half-dead | fd-limit | churn) scenarios+=("$arg") ;;
    *)
      echo "unknown argument: $arg (scenarios: ${all[*]}; --quick)" >&2
      exit 2
      ;;
  esac
done
((${#scenarios[@]})) || scenarios=("${all[@]}")

if [[ -z ${BURROWD:-} ]]; then
  cargo build --release --quiet || {
    echo "FAIL setup: cargo build --release failed"
    exit 1
  }
  BURROWD=$target_dir/release/burrowd
fi
if [[ ! -x $BURROWD ]]; then
  echo "FAIL setup: no executable burrowd at $BURROWD"
  exit 1
fi
export BURROWD

work=$(mktemp -d "${TMPDIR:-/tmp}/burrowd-stress.XXXXXX")
child=

# Kills every burrowd a scenario recorded in $work/pids (stress.py writes each pid as it starts it)
# that is still running: a python killed outright leaves its burrowd behind.
kill_recorded() {
  local pid
  [[ -f $work/pids ]] || return 0
  while read -r pid; do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == burrowd ]] && kill -KILL "$pid" 2>/dev/null
  done <"$work/pids"
  rm -f "$work/pids"
}

cleanup() {
  if [[ -n $child ]]; then
    kill "$child" 2>/dev/null # timeout passes the signal on to python and burrowd
    wait "$child" 2>/dev/null
  fi
  kill_recorded
  if [[ -n ${STRESS_KEEP:-} ]]; then
    echo "logs kept in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# hard_deadline SCENARIO: seconds after which the scenario is killed and failed
# ($STRESS_DEADLINE, when set, for every scenario).
hard_deadline() {
  if [[ -n ${STRESS_DEADLINE:-} ]]; then
    echo "$STRESS_DEADLINE"
  elif $quick; then
    case $1 in
      stalled-*) echo 60 ;;
      slow-honest) echo 30 ;;
      half-dead) echo 45 ;;
      fd-limit) echo 30 ;;
      churn) echo 60 ;;
    esac
  else
    case $1 in
      stalled-*) echo 180 ;;
      slow-honest) echo 30 ;;
      half-dead) echo 60 ;;
      fd-limit) echo 60 ;;
      churn) echo 300 ;;
    esac
  fi
}

size=full
$quick && size=quick
echo "burrowd stress ($size size): $BURROWD"
echo "somaxconn $(cat /proc/sys/net/core/somaxconn), RLIMIT_NOFILE here $(ulimit -Sn):$(ulimit -Hn)," \
  "local ports $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range)"

passed=0
failed=0
started=$SECONDS
for name in "${scenarios[@]}"; do
  limit=$(hard_deadline "$name")
  t0=$SECONDS
  args=(--work "$work" --deadline "$limit")
  $quick && args+=(--quick)
  timeout -k 5 "$limit" python3 -u "$root/scripts/stress.py" "${args[@]}" "$name" &
  child=$!
  wait "$child"
  rc=$?
  child=
  kill_recorded
  case $rc in
    0) passed=$((passed + 1)) ;;
    124 | 137)
      echo "FAIL $name: killed at the hard deadline of ${limit}s"
      failed=$((failed + 1))
      ;;
    *) failed=$((failed + 1)) ;;
  esac
  echo "  ($name took $((SECONDS - t0)) s)"
done
echo "$passed passed, $failed failed in $((SECONDS - started)) s ($size size)"
((failed == 0))
