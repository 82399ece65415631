# statewall: the two commands a newcomer needs are `make demo` and `make test`.
# Both run scripts/setup.sh first (idempotent: installs only what is missing).
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/statewall

.PHONY: setup build test fmt-check lint demo bench soak deb clean dataset model model-cv

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build

# fmt + clippy + every test (unit, test-run, netns, daemon, doc). One build profile (dev).
# scripts/test.sh lints while it builds the tests (clippy-driver in place of rustc, every
# warning an error: what `make lint`'s clippy checks, in the same build), then runs two
# test binaries at once (TEST_JOBS=1: one after another); every binary's output lands in
# target/test-logs/, all of it in target/test.log.
test: setup fmt-check
	CARGO='$(CARGO)' bash scripts/test.sh

fmt-check: setup
	@mkdir -p target
	$(CARGO) fmt --all -- --check
	cd crates/statewall-ebpf && $(CARGO) fmt -- --check

lint: fmt-check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: build
	$(BIN) demo

# Benchmarks: medians, ratios against baselines measured in the same run, MET/MISSED,
# target/bench/latest.json and SVG figures; exits non-zero when a target is missed.
# Also draws the figures (target/bench/*.svg), copied to docs/bench/ for README.
bench: build
	$(BIN) bench --out target/bench/latest.json; rc=$$?; \
	  mkdir -p docs/bench && cp target/bench/*.svg docs/bench/ 2>/dev/null; exit $$rc

# The learned detectors' data (README, "Learned classifier", "Mining detection"):
# labelled captures between fresh namespaces. Floods over benign traffic in data/*.pcap and
# data/manifest.json (about 23 minutes: eighteen 25 s attack captures and a 60 s benign one
# for training; six with other seeds and addresses and a 10-minute benign capture held
# out), the
# application attacks over benign traffic with DNS in sets of their own, train-apps and
# held-out-apps (about 7 minutes: an HTTP request flood, a slow HTTP attack and DNS
# reflection, two 25 s captures each and one held out, and four more slow attacks for
# training: the overloaded server's clients look like a slow attack's first seconds), then
# Stratum miners among long-lived benign sessions, in the same folder (an hour: six
# 5-minute captures for training, six held out; seeds 701 to 703 were added after the
# known-miner rule of detect/pools.rs, to judge it on captures it was not written against). `make model` trains both built-in
# models from the training sets (the flood model: a forest trained on the floods, a sample
# an attack when 17 of its 25 trees say so, and a second forest for the samples that carry
# payload, trained on the floods and the application attacks, 25 trees of depth at most 16,
# 19 votes; a mining sample is mining when 21 trees say so, and the mining model also
# learns every flow of the flood and benign captures as no mining) and evaluates them on
# the held-out sets.
DATA := data
dataset: build
	rm -rf $(DATA)
	$(BIN) dataset --out $(DATA) --set train --seed 1 --rounds 3
	$(BIN) dataset --out $(DATA) --set held-out --seed 501 --benign-seconds 600
	$(BIN) dataset --out $(DATA) --set train-apps --seed 41 --rounds 2 --kinds http,slow,dns \
	  --benign-seconds 0
	$(BIN) dataset --out $(DATA) --set train-apps --seed 61 --rounds 4 --kinds slow --benign-seconds 0
	$(BIN) dataset --out $(DATA) --set held-out-apps --seed 541 --kinds http,slow,dns \
	  --benign-seconds 0
	$(BIN) dataset --out $(DATA) --detector mining --set train --seed 1 --rounds 6 --seconds 300
	$(BIN) dataset --out $(DATA) --detector mining --set held-out --seed 501 --rounds 3 --seconds 300
	$(BIN) dataset --out $(DATA) --detector mining --set held-out --seed 701 --rounds 3 --seconds 300

# Leave-one-capture-out cross-validation of three forest settings over the training
# captures, the application attacks' included (a few minutes; README, "Training and
# evaluation").
model-cv: build
	scripts/detect-cv.py $(DATA)/manifest.json $(BIN) train,train-apps

model: build
	$(BIN) detect train --manifest $(DATA)/manifest.json --set train,train-apps --window 2 \
	  --depth 16 --min-votes 19 --out $(DATA)/payload-model.json
	$(BIN) detect train --manifest $(DATA)/manifest.json --set train --window 2 \
	  --min-votes 17 --payload-model $(DATA)/payload-model.json \
	  --out crates/statewall/src/detect/ddos-model.json
	$(BIN) detect train --detector mining --manifest $(DATA)/manifest.json --set train \
	  --window 10 --history 6 --min-votes 21 --out crates/statewall/src/detect/mining-model.json
	$(CARGO) build
	$(BIN) detect eval --manifest $(DATA)/manifest.json --set held-out
	$(BIN) detect eval --manifest $(DATA)/manifest.json --set held-out-apps
	$(BIN) detect eval --detector mining --manifest $(DATA)/manifest.json --set held-out

# Long runs: every test with 20 times the counts (STATEWALL_SOAK=20: restarts under
# traffic, memory rounds, attack packets, property-test frames; full port scans stay one
# pass over every port), then every fuzz target for
# a fixed number of runs (cargo-fuzz, libFuzzer without a sanitizer: Debian's stable rustc,
# with RUSTC_BOOTSTRAP for cargo-fuzz's flags), then a summary of what was tried
# (scripts/soak-summary.sh). Logs in target/soak/. New inputs go to fuzz/work/ (not
# committed); the seeds in fuzz/corpus/ are replayed by `make test`. A finding lands in
# fuzz/artifacts/. A failed test (a loss, a packet wrongly let in, resident memory past its
# bound) or a fuzzer's crash makes the run fail.
FUZZ_TARGETS := spa_pkd spa_fwknop config import_knockd import_fwknop actions_json rest_bodies dynmon_object capture
FUZZ_RUNS ?= 500000
SOAK_DIR := target/soak
soak: build
	@rm -rf $(SOAK_DIR) && mkdir -p $(SOAK_DIR)
	STATEWALL_SOAK=20 STATEWALL_SOAK_REPORT=$(CURDIR)/$(SOAK_DIR)/report.tsv \
	  $(CARGO) test --workspace -- --test-threads=2 --nocapture 2>&1 | tee $(SOAK_DIR)/tests.log \
	  | grep -E "^test |test result|FAILED|panicked"; \
	  rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then bash scripts/soak-summary.sh $(SOAK_DIR); fi; exit $$rc
	@bash scripts/setup-fuzz.sh
	set -o pipefail; rc=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/work/$$t; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -s none work/$$t corpus/$$t -- -runs=$(FUZZ_RUNS)) 2>&1 \
	    | tee $(SOAK_DIR)/fuzz-$$t.log | grep -E "^Done|ERROR|SUMMARY|panicked" || rc=1; \
	done; bash scripts/soak-summary.sh $(SOAK_DIR) && exit $$rc

# The Debian package (a release build, so not part of make test): target/deb/*.deb, then its
# contents checked in a scratch root (packaging/make-deb.sh).
deb: setup
	bash packaging/make-deb.sh

clean:
	$(CARGO) clean
	rm -rf crates/statewall-ebpf/target
