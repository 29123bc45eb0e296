#!/usr/bin/env bash
# Checks the Debian package as a user would meet it (run by .ci/run, as root): builds it with
# scripts/deb.sh, requires lintian to report nothing that is not overridden, installs it with
# dpkg -i, checks the installed configuration, starts the installed binary on it and serves one
# curl through it, then removes and purges the package and requires the machine to be as it
# was before: files, the group, the unit's enablement state and dpkg's permission overrides.
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

passed=0
failed=0
result() {
  if [[ $1 == PASS* ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  echo "$1"
}
need() { # need COMMAND PACKAGE: installs PACKAGE from Debian if COMMAND is missing
  command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; } ||
    { echo "FAIL setup: cannot install $2"; exit 1; }
}

if ((EUID != 0)); then
  echo "SKIP scripts/deb-check.sh: installing a package needs root"
  exit 0
fi
need lintian lintian
need curl curl
if dpkg-query -W -f '${Status}' burrowd 2>/dev/null | grep -q installed; then
  echo "FAIL setup: a burrowd package is installed already; this check must find the machine without it"
  exit 1
fi

# What install and purge may touch; the same listing before and after means nothing is left.
machine_state() {
  getent group burrowd
  dpkg-statoverride --list | grep burrowd
  find /etc/burrowd /usr/sbin/burrowd /lib/systemd/system/burrowd.service /etc/systemd/system \
    /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
    /usr/share/doc/burrowd /usr/share/man/man8/burrowd.8.gz -printf '%M %u %g %p\n' 2>/dev/null | sort
}
before=$(machine_state)

deb=$(bash scripts/deb.sh) || { echo "FAIL scripts/deb.sh"; exit 1; }
binary_size=$(dpkg-deb --fsys-tarfile "$deb" | tar -tvf - ./usr/sbin/burrowd | awk '{print $3}')
# The binary that goes into the package stays small: under 1 MiB.
if ((binary_size < 1048576)); then
  result "PASS built $deb ($(stat -c %s "$deb") bytes; /usr/sbin/burrowd $binary_size bytes, under 1 MiB)"
else
  result "FAIL /usr/sbin/burrowd is $binary_size bytes, 1 MiB or more (cargo bloat shows what grew)"
fi

lint=$(lintian --pedantic --info "$deb" 2>/dev/null)
if [[ -n $lint ]]; then
  result "FAIL lintian: $(echo "$lint" | head -n 5 | tr '\n' ' ')"
else
  result "PASS lintian --pedantic --info reports nothing (overrides: scripts/deb/lintian-overrides)"
fi

work=$(mktemp -d)
proxy_pid=
web_pid=
cleanup() {
  [[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null
  [[ -n $web_pid ]] && kill "$web_pid" 2>/dev/null
  dpkg -P burrowd >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

if dpkg -i "$deb" >"$work/install.log" 2>&1; then
  result "PASS dpkg -i"
else
  result "FAIL dpkg -i: $(tail -n 3 "$work/install.log" | tr '\n' ' ')"
  exit 1
fi
[[ $(stat -c '%a %U %G' /etc/burrowd/users) == "640 root burrowd" ]] &&
  result "PASS /etc/burrowd/users is 0640 root:burrowd" ||
  result "FAIL /etc/burrowd/users is $(stat -c '%a %U %G' /etc/burrowd/users)"

if out=$(/usr/sbin/burrowd --check --config /etc/burrowd/burrowd.conf 2>&1); then
  result "PASS burrowd --check --config /etc/burrowd/burrowd.conf: $(echo "$out" | head -n 1)"
else
  result "FAIL burrowd --check: $out"
fi

# The installed binary on the installed configuration, as the unit starts it.
mkdir "$work/site" && echo "served through the package" >"$work/site/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$work/site" 0 >"$work/web.log" 2>&1 &
web_pid=$!
/usr/sbin/burrowd --config /etc/burrowd/burrowd.conf 2>"$work/burrowd.log" &
proxy_pid=$!
for _ in $(seq 100); do
  grep -q 'listening on 127.0.0.1:1080' "$work/burrowd.log" && web_port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/web.log" | head -n 1) &&
    [[ -n $web_port ]] && break
  sleep 0.1
done
body=$(curl -sS --max-time 10 --socks5-hostname 127.0.0.1:1080 "http://127.0.0.1:${web_port:-0}/" 2>&1)
if [[ $body == "served through the package" ]]; then
  result "PASS curl through the installed burrowd on 127.0.0.1:1080"
else
  result "FAIL curl through the installed burrowd: $body ($(tail -n 2 "$work/burrowd.log" | tr '\n' ' '))"
fi
kill "$proxy_pid" "$web_pid" 2>/dev/null
wait "$proxy_pid" "$web_pid" 2>/dev/null
proxy_pid= web_pid=

dpkg -r burrowd >"$work/remove.log" 2>&1 && [[ -e /etc/burrowd/burrowd.conf && ! -e /usr/sbin/burrowd ]] &&
  result "PASS dpkg -r: the binary is gone, the configuration kept" ||
  result "FAIL dpkg -r: $(tail -n 3 "$work/remove.log" | tr '\n' ' ')"
dpkg -P burrowd >"$work/purge.log" 2>&1 || result "FAIL dpkg -P: $(tail -n 3 "$work/purge.log" | tr '\n' ' ')"
after=$(machine_state)
if [[ $before == "$after" ]]; then
  result "PASS dpkg -P leaves the machine as it was"
else
  result "FAIL dpkg -P left: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 5 | tr '\n' ' ')"
fi

echo "$passed passed, $failed failed"
((failed == 0))
