#!/usr/bin/env bash
# `make deb`: builds statewall in release, lays out a Debian package (binary, systemd unit,
# example config as a conffile, manual pages and shell completions generated from the
# command line's definition, docs and examples), builds it with dpkg-deb, then unpacks it
# in a scratch root and checks that everything is there and works. Exits non-zero on any
# missing piece. Not part of `make test`: it needs a second (release) build.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[deb] %s\n' "$*"; }
die() { printf '[deb] ERROR: %s\n' "$*" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
OUT=target/deb
ROOT=$OUT/root
PKG=$OUT/statewall_${VERSION}_${ARCH}.deb

say "release build"
cargo build --release --bin statewall
BIN=target/release/statewall

rm -rf "$OUT"
mkdir -p "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/etc/statewall" \
  "$ROOT/usr/share/man/man1" "$ROOT/usr/share/bash-completion/completions" \
  "$ROOT/usr/share/zsh/vendor-completions" "$ROOT/usr/share/fish/vendor_completions.d" \
  "$ROOT/usr/share/doc/statewall/examples"
install -m 0755 "$BIN" "$ROOT/usr/bin/statewall"
strip --strip-debug "$ROOT/usr/bin/statewall"
install -m 0644 packaging/statewall.service "$ROOT/lib/systemd/system/statewall.service"
install -m 0644 examples/statewall.toml "$ROOT/etc/statewall/statewall.toml"
"$BIN" manpages "$ROOT/usr/share/man/man1"
gzip -9n "$ROOT"/usr/share/man/man1/*.1
"$BIN" completions bash > "$ROOT/usr/share/bash-completion/completions/statewall"
"$BIN" completions zsh > "$ROOT/usr/share/zsh/vendor-completions/_statewall"
"$BIN" completions fish > "$ROOT/usr/share/fish/vendor_completions.d/statewall.fish"
install -m 0644 README.md "$ROOT/usr/share/doc/statewall/README.md"
cp -r examples/xfsm-*.toml examples/dynmon "$ROOT/usr/share/doc/statewall/examples/"
cp -r deploy "$ROOT/usr/share/doc/statewall/"
cat > "$ROOT/usr/share/doc/statewall/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: statewall
Files: *
License: MIT or Apache-2.0
COPY
chmod -R u+rwX,go+rX,go-w "$ROOT"

SIZE=$(du -sk "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CTRL
Package: statewall
Version: $VERSION
Architecture: $ARCH
Maintainer: statewall developers <statewall@localhost>
Installed-Size: $SIZE
Depends: libc6 (>= 2.36), iproute2
Recommends: clang-22 | clang, libbpf-dev
Suggests: knockd, fwknop-client, prometheus
Section: net
Priority: optional
Homepage: https://statewall.invalid/
Description: stateful packet processing with eBPF
 statewall attaches small eBPF programs to an interface's tcx (or XDP) hooks and
 manages them from a daemon: port knocking (knockd-compatible), single packet
 authorization (pkd and fwknop formats), a firewall with conntrack whose cost hardly
 grows with the rule count, traffic monitors, and your own eBPF programs as
 dynamic monitors. REST API (native and Polycube-compatible), CLI, /metrics.
CTRL
echo /etc/statewall/statewall.toml > "$ROOT/DEBIAN/conffiles"
cat > "$ROOT/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  # Not enabled by default: edit /etc/statewall/statewall.toml first, then
  # `systemctl enable --now statewall` (a wrong policy can lock you out).
fi
POST
cat > "$ROOT/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
POSTRM
chmod 0755 "$ROOT/DEBIAN/postinst" "$ROOT/DEBIAN/postrm"

dpkg-deb --root-owner-group --build "$ROOT" "$PKG" >/dev/null
say "built $PKG ($(du -h "$PKG" | cut -f1))"

# --- check the package's contents in a scratch root --------------------------------------
CHECK=$OUT/check
rm -rf "$CHECK"; mkdir -p "$CHECK"
dpkg-deb -x "$PKG" "$CHECK"
dpkg-deb -I "$PKG" control | grep -q '^Package: statewall$' || die "control: no Package"
dpkg-deb -I "$PKG" conffiles | grep -qx /etc/statewall/statewall.toml || die "conffile missing"
for f in usr/bin/statewall lib/systemd/system/statewall.service etc/statewall/statewall.toml \
  usr/share/man/man1/statewall.1.gz usr/share/man/man1/statewall-daemon.1.gz \
  usr/share/man/man1/statewall-dynmon-load.1.gz \
  usr/share/bash-completion/completions/statewall usr/share/zsh/vendor-completions/_statewall \
  usr/share/fish/vendor_completions.d/statewall.fish usr/share/doc/statewall/copyright \
  usr/share/doc/statewall/examples/dynmon/c/flows.c usr/share/doc/statewall/deploy/kubernetes/statewall.yaml; do
  [ -s "$CHECK/$f" ] || die "missing or empty in the package: /$f"
done
dpkg-deb -c "$PKG" | awk '{print $2}' | grep -qv '^root/root$' && die "files not owned by root"
"$CHECK/usr/bin/statewall" --version | grep -q "statewall $VERSION" || die "the binary does not run"
# Completions come from the definition: every subcommand is in them.
for sub in daemon knock spa firewall monitor dynmon gate status; do
  grep -q "$sub" "$CHECK/usr/share/bash-completion/completions/statewall" || die "bash completion lacks $sub"
done
bash -n "$CHECK/usr/share/bash-completion/completions/statewall" || die "bash completion does not parse"
man -l "$CHECK/usr/share/man/man1/statewall-dynmon-load.1.gz" 2>/dev/null | grep -q -- "--metrics" \
  || die "statewall-dynmon-load(1) does not render"
# The example config is the one the binary accepts.
"$CHECK/usr/bin/statewall" check-config "$CHECK/etc/statewall/statewall.toml" >/dev/null \
  || die "the packaged config does not load"
# The unit, against the unpacked tree (its ExecStart resolved there).
if systemd-analyze --version >/dev/null 2>&1; then
  sed "s|/usr/bin/statewall|$PWD/$CHECK/usr/bin/statewall|" "$CHECK/lib/systemd/system/statewall.service" \
    > "$OUT/statewall.service"
  MANPATH="$PWD/$CHECK/usr/share/man" systemd-analyze verify "$OUT/statewall.service" \
    || die "systemd-analyze verify failed"
  say "systemd-analyze verify: ok"
else
  say "systemd-analyze is not available here: the unit was not verified"
fi
say "contents checked: $(dpkg-deb -c "$PKG" | wc -l) entries"
