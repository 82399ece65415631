#!/usr/bin/env bash
# Idempotent: what `make soak` needs beyond scripts/setup.sh, i.e. cargo-fuzz (libFuzzer
# needs a C++ compiler: g++ from Debian). Kept out of setup.sh so that `make test` does not
# pay for it: make test only replays the saved corpora.
set -euo pipefail
say() { printf '[setup-fuzz] %s\n' "$*"; }
die() { printf '[setup-fuzz] ERROR: %s\n' "$*" >&2; exit 1; }
bash "$(dirname "$0")/setup.sh"
if ! command -v g++ >/dev/null; then
  say "installing g++ (libFuzzer is C++)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++ >/dev/null \
    || die "apt-get install g++ failed"
fi
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if "$CARGO_BIN/cargo-fuzz" --version 2>/dev/null | grep -q '0\.13\.2'; then
  say "cargo-fuzz 0.13.2 present"
else
  say "building cargo-fuzz 0.13.2 (a few minutes)"
  cargo install cargo-fuzz@0.13.2 --locked || die "cargo install cargo-fuzz failed"
fi
say "ready"
