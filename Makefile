# statewall: the two commands a newcomer needs are `make demo` and `make test`.
# Both run scripts/setup.sh first (idempotent: installs only what is missing).
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/statewall

.PHONY: setup build test lint demo bench soak clean

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build

# fmt + clippy + every test (unit, test-run, netns, daemon). One build profile (dev).
test: setup lint
	$(CARGO) test --workspace 2>&1 | tee target/test.log; exit $${PIPESTATUS[0]}

lint: setup
	@mkdir -p target
	$(CARGO) fmt --all -- --check
	cd crates/statewall-ebpf && $(CARGO) fmt -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: build
	$(BIN) demo

# Benchmarks: medians, ratios against baselines measured in the same run, MET/MISSED,
# target/bench/latest.json; exits non-zero when a target is missed.
bench: build
	$(BIN) bench --out target/bench/latest.json

# Long runs: the property tests with many more cases.
soak: build
	STATEWALL_SOAK=20 $(CARGO) test --workspace -- --test-threads=2

clean:
	$(CARGO) clean
	rm -rf crates/statewall-ebpf/target
