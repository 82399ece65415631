#!/usr/bin/env bash
# make test's runner. Builds every test target of the workspace once (one profile), then
# runs the test binaries two at a time instead of one after another. Run alone, a binary
# keeps one core busy (mostly the kernel's verifier, loading programs) while the other
# waits with it on traffic between namespaces, timers and windows. Every binary names its
# namespaces, links, pins and sockets after its own process id, so two never share one, and
# a test that counts kernel objects counts its own (the ones its daemon holds).
# Each binary runs in its package's directory, as `cargo test` runs it; the doc tests run
# as one more job.
#
# The build is also the lint: clippy-driver compiles the workspace's crates in place of
# rustc (what `cargo clippy` itself does, through RUSTC_WORKSPACE_WRAPPER and CLIPPY_ARGS),
# every warning an error, so that one build checks what `cargo clippy --workspace
# --all-targets -- -D warnings` checks (the same targets: lib, bins, unit and integration
# tests) and makes the test binaries: the dependencies are compiled once, not once more
# for clippy's check.
#
#   TEST_JOBS=N   binaries at once (default 2; 1 runs them one after another)
#   TEST_LINT=0   build with plain rustc (no lints; the artifacts of a plain `cargo test`)
#   TEST_ARGS=... passed to every test binary (a filter, --nocapture, ...), not to the
#                 doc tests
#
# Output: target/test-logs/<binary>.log for each binary, all of them in target/test.log,
# one line per binary as it ends, the logs of the failed ones in full at the end. Exits
# non-zero when the build or any binary fails.
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
JOBS=${TEST_JOBS:-2}
logs=target/test-logs
rm -rf "$logs"
mkdir -p "$logs"

# Build (and lint), and list "package-dir executable" for every test binary.
lint=()
if [ "${TEST_LINT:-1}" != 0 ]; then
	lint=(env RUSTC_WORKSPACE_WRAPPER=clippy-driver
		CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__)
fi
"${lint[@]}" $CARGO test --workspace --no-run --message-format=json-render-diagnostics \
	>"$logs/build.json" || exit $?
sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"profile":{[^}]*"test":true[^}]*}.*"executable":"\([^"]*\)".*/\1 \2/p' \
	"$logs/build.json" >"$logs/binaries"
[ -s "$logs/binaries" ] || {
	echo "test.sh: the build listed no test binary" >&2
	exit 1
}

# The binaries that take longest start first, so the last to start are short ones.
slow="mining detect xfsm cluster registers classify firewall_api efsm gate knock spa daemon"
order() {
	local s
	for s in $slow; do grep " .*/deps/$s-[0-9a-f]*$" "$logs/binaries"; done
	grep -v -E " .*/deps/($(echo "$slow" | tr ' ' '|'))-[0-9a-f]*$" "$logs/binaries"
}

run_one() { # name dir command...
	local name=$1 dir=$2 t0 rc
	shift 2
	t0=$(date +%s.%N)
	(cd "$dir" && "$@") >"$logs/$name.log" 2>&1
	rc=$?
	awk -v rc="$rc" -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%s %.1f\n", rc, t1 - t0 }' \
		>"$logs/$name.rc"
	if [ "$rc" = 0 ]; then
		printf 'ok      %6.1fs  %s\n' "$(cut -d' ' -f2 "$logs/$name.rc")" "$name"
	else
		printf 'FAILED  %6.1fs  %s (rc %s)\n' "$(cut -d' ' -f2 "$logs/$name.rc")" "$name" "$rc"
	fi
}

t_start=$(date +%s)
running=0
start() {
	while [ "$running" -ge "$JOBS" ]; do
		wait -n
		running=$((running - 1))
	done
	# (stdin: not the list being read)
	run_one "$@" </dev/null &
	running=$((running + 1))
}
declare -A seen
started=()
# shellcheck disable=SC2086
while read -r dir exe; do
	name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
	[ -n "${seen[$name]:-}" ] && name="$name-$(basename "$dir")"
	seen[$name]=1
	started+=("$name")
	start "$name" "$dir" "$exe" ${TEST_ARGS:-}
done < <(order)
# (With the build's wrapper: a different one would build the library again.)
start doc-tests . "${lint[@]}" $CARGO test --workspace --doc
started+=(doc-tests)
wait

# Every log in one file, then the verdict.
failed=()
: >target/test.log
for name in "${started[@]}"; do
	rc=$logs/$name.rc
	if [ ! -e "$rc" ]; then
		echo "==== $name: never ended" >>target/test.log
		failed+=("$name")
		continue
	fi
	{
		echo "==== $name (rc $(cut -d' ' -f1 "$rc"), $(cut -d' ' -f2 "$rc") s)"
		cat "$logs/$name.log"
	} >>target/test.log
	[ "$(cut -d' ' -f1 "$rc")" = 0 ] || failed+=("$name")
done
n=${#started[@]}
passed=$(grep -h '^test result:' "$logs"/*.log | awk '{s+=$4} END {print s+0}')
echo "test.sh: $n jobs, $passed tests passed, ${#failed[@]} jobs failed, $(($(date +%s) - t_start)) s with $JOBS at once"
for name in "${failed[@]}"; do
	echo "==== $name failed: $logs/$name.log"
	cat "$logs/$name.log"
done
[ "${#failed[@]}" = 0 ]
