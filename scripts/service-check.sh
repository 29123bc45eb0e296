#!/usr/bin/env bash
# Checks scripts/burrowd.service: `systemd-analyze verify` has nothing to say about it, and the
# release burrowd, confined by the unit's own settings (system-call filter, address families,
# capabilities, an unprivileged user, the descriptor limit), serves every kind of session
# (scripts/service_check.py says how, and what it cannot apply without systemd as PID 1).
# Prints `PASS name` / `FAIL name: reason`, then `N passed, N failed`; exits non-zero on any
# failure.
#
# Installs what it lacks with apt-get: systemd (systemd-analyze), python3-seccomp, util-linux
# (setpriv, prlimit). The confined run needs root, to switch to an unprivileged user; as
# another user only the verify step runs. BURROWD: the binary to check (default: built with
# `cargo build --release`).
#
# NETWORK RULE: 127.0.0.1 only.

set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
unit=scripts/burrowd.service
work=$(mktemp -d "${TMPDIR:-/tmp}/burrowd-service.XXXXXX")
trap 'rm -rf "$work"' EXIT

apt_updated=false
# need COMMAND PACKAGE: installs the Debian PACKAGE unless COMMAND succeeds already.
need() {
  eval "$1" >/dev/null 2>&1 && return 0
  echo "installing $2" >&2
  if ! $apt_updated; then
    apt-get update -qq >/dev/null
    apt_updated=true
  fi
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null && eval "$1" >/dev/null 2>&1
}

need "command -v systemd-analyze" systemd || { echo "FAIL setup: cannot install systemd-analyze"; exit 1; }
if [[ -n ${BURROWD:-} ]]; then
  burrowd=$(realpath "$BURROWD")
else
  cargo build --release --quiet || { echo "FAIL setup: cargo build --release"; exit 1; }
  burrowd=${CARGO_TARGET_DIR:-$root/target}/release/burrowd
fi

passed=0
failed=0
result() {
  if [[ $1 == PASS* ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  echo "$1"
}

# verify requires ExecStart='s program to exist, and the unit names where docs/operations.md installs it;
# so it verifies a copy that names the binary just built instead, the one line changed.
sed "s|^ExecStart=/usr/local/bin/burrowd |ExecStart=$burrowd |" "$unit" >"$work/burrowd.service"
changed=$(diff "$unit" "$work/burrowd.service" | grep -c '^[<>]')
# verify looks up Documentation='s man page with man(1): the one in doc/, as the package installs it.
mkdir -p "$work/man/man8"
cp "$root/doc/burrowd.8" "$work/man/man8/"
# verify only warns, with status 0, about a misspelt or unknown setting: any output fails.
out=$(MANPATH="$work/man" systemd-analyze verify "$work/burrowd.service" 2>&1)
rc=$?
if ((changed != 2)); then
  result "FAIL systemd-analyze verify: ExecStart is not /usr/local/bin/burrowd --config ..."
elif ((rc != 0)) || [[ -n $out ]]; then
  result "FAIL systemd-analyze verify: status $rc: $(echo "$out" | head -n 3 | tr '\n' ' ')"
else
  result "PASS systemd-analyze verify $unit"
fi

if ((EUID != 0)); then
  echo "SKIP the confined run: needs root"
else
  need "command -v setpriv && command -v prlimit" util-linux
  need "/usr/bin/python3 -c 'import seccomp'" python3-seccomp
  out=$(/usr/bin/python3 scripts/service_check.py "$burrowd" "$unit" 2>&1)
  lines=$(grep -E '^(PASS|FAIL) ' <<<"$out")
  [[ -n $lines ]] || lines="FAIL the confined run: $(tail -n 1 <<<"$out")"
  while read -r line; do
    result "$line"
  done <<<"$lines"
fi
echo "$passed passed, $failed failed"
((failed == 0))
