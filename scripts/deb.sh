#!/usr/bin/env bash
# Builds the Debian package burrowd_<version>-1_amd64.deb from the static musl binary (the
# `small` profile: under 1 MiB, which scripts/deb-check.sh holds it to) with
# dpkg-deb alone (no debhelper): the binary, the hardened unit, a loopback-only
# configuration that works as installed, an empty users file, the man page, copyright and
# a changelog made from CHANGELOG.md. Prints the package's path.
#
# Usage: scripts/deb.sh [OUTDIR]      (default: target/deb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

musl=x86_64-unknown-linux-musl
binary=target/$musl/small/burrowd
out=${1:-target/deb}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=1
maintainer="The burrowd developers <burrowd@example.org>"

cargo build --profile small --quiet --target "$musl"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"
doc=$root/usr/share/doc/burrowd

install -D -m 755 "$binary" "$root/usr/sbin/burrowd"
# The release profile strips symbols; the toolchain's notes and comments go too.
strip --remove-section=.comment --remove-section=.note "$root/usr/sbin/burrowd"
# The unit names the binary where a hand install puts it (docs/operations.md); the package's is in sbin.
install -d "$root/lib/systemd/system"
sed 's|/usr/local/bin/burrowd|/usr/sbin/burrowd|g' scripts/burrowd.service >"$root/lib/systemd/system/burrowd.service"
grep -q '^ExecStart=/usr/sbin/burrowd ' "$root/lib/systemd/system/burrowd.service"
chmod 644 "$root/lib/systemd/system/burrowd.service"
install -D -m 644 scripts/burrowd.conf "$root/etc/burrowd/burrowd.conf"
# Empty: burrowd refuses a users file with no user, so the config names it in a comment
# until there is one. postinst gives both files and the directory the group burrowd.
install -m 640 /dev/null "$root/etc/burrowd/users"
install -d "$root/usr/share/man/man8"
gzip -9n <doc/burrowd.8 >"$root/usr/share/man/man8/burrowd.8.gz"
install -D -m 644 scripts/deb/copyright "$doc/copyright"
install -D -m 644 scripts/deb/lintian-overrides "$root/usr/share/lintian/overrides/burrowd"
gzip -9n <CHANGELOG.md >"$doc/changelog.gz"

# changelog.Debian: one entry per `## VERSION (YYYY-MM-DD)` section of CHANGELOG.md, each
# `- ` item (with its indented continuation lines) a `  * ` item wrapped at 80 columns.
debian_changelog() {
  local heading version date
  while IFS= read -r heading; do
    version=${heading#\#\# }
    version=${version%% *}
    date=${heading##*(}
    date=${date%)}
    printf 'burrowd (%s-%s) unstable; urgency=medium\n\n' "$version" "$revision"
    awk -v want="$heading" '
      function flush(  n, words, i, line) {
        if (item == "") return
        n = split(item, words, " ")
        line = "  *"
        for (i = 1; i <= n; i++) {
          if (length(line) + 1 + length(words[i]) > 80) { print line; line = "   " }
          line = line " " words[i]
        }
        print line
        item = ""
      }
      $0 == want { inside = 1; next }
      /^## / { flush(); inside = 0 }
      inside && /^- / { flush(); item = substr($0, 3); next }
      inside && /^  [^ ]/ { item = item " " substr($0, 3) }
      END { flush() }
    ' CHANGELOG.md
    printf '\n -- %s  %s\n\n' "$maintainer" "$(LC_ALL=C date -u -R -d "$date 12:00")"
  done < <(grep -E '^## [0-9]+\.[0-9]+\.[0-9]+ \([0-9]{4}-[0-9]{2}-[0-9]{2}\)$' CHANGELOG.md)
}
debian_changelog | sed '$d' | gzip -9n >"$doc/changelog.Debian.gz"
zcat "$doc/changelog.Debian.gz" | head -n 1 | grep -qx "burrowd ($version-$revision) unstable; urgency=medium" ||
  { echo "deb.sh: CHANGELOG.md's newest section is not version $version" >&2; exit 1; }

install -d "$root/DEBIAN"
install -m 755 scripts/deb/postinst scripts/deb/prerm scripts/deb/postrm "$root/DEBIAN/"
printf '/etc/burrowd/burrowd.conf\n/etc/burrowd/users\n' >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
cat >"$root/DEBIAN/control" <<CONTROL
Package: burrowd
Version: $version-$revision
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: adduser, init-system-helpers (>= 1.54~)
Section: net
Priority: optional
Description: SOCKS4/4a/5 proxy server and port forwarder
 burrowd is a SOCKS proxy server for small hosts: one static binary. It speaks
 SOCKS5 (CONNECT, BIND and UDP ASSOCIATE, IPv4, IPv6 and names resolved by the
 proxy) with username/password login, and SOCKS4 and SOCKS4a on the same port.
 It forwards TCP and UDP ports, chains through upstream SOCKS5 proxies, keeps
 access rules, and shows live sessions and Prometheus metrics.
 .
 The package runs it as a hardened systemd service on 127.0.0.1:1080; edit
 /etc/burrowd/burrowd.conf and /etc/burrowd/users to serve a network.
CONTROL

mkdir -p "$out"
deb="$out/burrowd_${version}-${revision}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
