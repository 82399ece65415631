#!/usr/bin/env bash
# Idempotent setup for statewall on a Debian bookworm machine with rustup (see
# ../shared/TOOLCHAIN.md). Installs the BPF toolchain, bpf-linker, runtime and test peers,
# and mounts bpffs. Skips what is already present; fails loudly on what cannot be done.
set -euo pipefail

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages, mounts bpffs)"

# Debian packages: BPF toolchain (Debian's rustc ships a prebuilt core for bpfel-unknown-none),
# LLVM 22 for bpf-linker, and the real peers the tests drive (prometheus: promtool and a real
# server scraping /metrics; clang-22 and libbpf-dev compile the C source of dynamic monitors;
# python3-venv holds kubernetes-validate, which checks the fleet manifest against Kubernetes'
# schemas; nmap scans protected ports to show they answer like closed ones; ethtool turns
# GRO on for the goodput bench; iputils-ping pings across the learning switch; hping3 sends
# the real floods the detect stage is tested against; etcd-server and etcd-client are the
# fleet's shared store, started by the tests as their own clusters on loopback, and
# protobuf-compiler with libprotobuf-dev (the well-known .proto files it imports) builds
# the etcd client crate's gRPC bindings; openssl makes the certificates of the TLS test;
# openssh-server, openssh-client, mosquitto and mosquitto-clients make the long-lived
# benign sessions of the mining dataset: ssh with keepalives, MQTT through a real broker;
# the flood dataset's application attacks: apache2-utils' ab (an HTTP request flood),
# slowhttptest (slow headers), dnsmasq-base (a real DNS server, reflecting spoofed
# queries; the binary only, no service) with nmap's nping sending the queries).
PKGS=(
  rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev libpolly-22-dev
  iproute2 iperf3 nftables iptables knockd fwknop-client fwknop-server curl tcpdump tmux
  prometheus clang-22 libbpf-dev python3-venv nmap ethtool iputils-ping hping3
  etcd-server etcd-client protobuf-compiler libprotobuf-dev openssl
  openssh-server openssh-client mosquitto mosquitto-clients
  apache2-utils slowhttptest dnsmasq-base
)
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No service a package ships may start while it installs (the packaged etcd would take
  # the default ports): a policy-rc.d that refuses, for the length of the install only.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get update -q >/dev/null || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
else
  say "Debian packages present"
fi

[ -x /usr/bin/rustc ] || die "/usr/bin/rustc missing after installing rustc-web"
LLVM_MAJOR=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ "$LLVM_MAJOR" = 22 ] || die "Debian rustc uses LLVM $LLVM_MAJOR, expected 22 (bpf-linker feature llvm-22)"
ls /usr/lib/rustlib/bpfel-unknown-none/lib/libcore-*.rlib >/dev/null 2>&1 \
  || die "no prebuilt core for bpfel-unknown-none under /usr/lib/rustlib (libstd-rust-web-dev-bpf)"

# bpf-linker 0.13.0 built against Debian's LLVM 22.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if "$CARGO_BIN/bpf-linker" --version 2>/dev/null | grep -q '0\.13\.0'; then
  say "bpf-linker 0.13.0 present"
else
  say "building bpf-linker 0.13.0 against LLVM 22 (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install bpf-linker@0.13.0 --locked --no-default-features --features llvm-22 \
    || die "cargo install bpf-linker failed"
fi

# kubernetes-validate (Kubernetes' JSON schemas, from PyPI) in a venv of its own, for the
# fleet manifest's check in make test.
KV=/opt/statewall-tools/bin/kubernetes-validate
if "$KV" --version 2>/dev/null | grep -q '^1\.37\.0$'; then
  say "kubernetes-validate 1.37.0 present"
else
  say "installing kubernetes-validate 1.37.0 into /opt/statewall-tools"
  /usr/bin/python3 -m venv /opt/statewall-tools || die "python3 -m venv failed"
  /opt/statewall-tools/bin/pip install -q kubernetes-validate==1.37.0 \
    || die "pip install kubernetes-validate failed"
fi

# The packaged etcd service stays off (tests run their own members on ports they choose):
# disabled where an init system manages it, and stopped if it runs on the default ports.
command -v etcd >/dev/null || die "etcd missing after installing etcd-server"
command -v etcdctl >/dev/null || die "etcdctl missing after installing etcd-client"
command -v protoc >/dev/null || die "protoc missing after installing protobuf-compiler"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
elif command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/etcd ]; then
  update-rc.d etcd disable >/dev/null 2>&1 || true
fi
for pid in $(pgrep -x etcd || true); do
  if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qv -- '--listen-client-urls'; then
    say "stopping the packaged etcd service (pid $pid, default ports)"
    kill "$pid" 2>/dev/null || true
  fi
done

# cargo-nextest is not needed: make test uses cargo test.

# bpffs: not mounted at boot on this machine kind.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  say "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf || die "cannot mount bpffs at /sys/fs/bpf"
fi
mkdir -p /var/lib/statewall /run/statewall

say "ready"
