#!/usr/bin/env bash
# What `make soak` tried, summed up from the tests' tallies (STATEWALL_SOAK_REPORT: one
# "count<TAB>what" line per tally), the test log and the fuzzers' logs. Exits non-zero
# when a test failed or a fuzzer did not finish its runs.
set -euo pipefail
dir=${1:-target/soak}
rc=0
echo "== make soak: what it tried =="
if [[ -s $dir/report.tsv ]]; then
    awk -F'\t' '{ sum[$2] += $1 } END { for (k in sum) printf "%14d  %s\n", sum[k], k }' \
        "$dir/report.tsv" | sort -k2
else
    echo "no tallies in $dir/report.tsv"
    rc=1
fi
if [[ -s $dir/tests.log ]]; then
    read -r passed failed < <(grep -h '^test result:' "$dir/tests.log" |
        awk '{ p += $4; f += $6 } END { print p + 0, f + 0 }')
    printf "%14d  tests passed, %d failed\n" "$passed" "$failed"
    [[ $failed -eq 0 ]] || rc=1
    grep -h 'resident memory:' "$dir/tests.log" | sed 's/^/                /' || true
fi
total=0
shopt -s nullglob
for log in "$dir"/fuzz-*.log; do
    t=$(basename "$log" .log)
    runs=$({ grep -o 'Done [0-9]* runs' "$log" || true; } | tail -1 | awk '{ print $2 }')
    if [[ -z $runs ]]; then
        echo "fuzz target ${t#fuzz-}: did not finish (see $log)"
        rc=1
        continue
    fi
    printf "%14d  fuzz executions: %s\n" "$runs" "${t#fuzz-}"
    total=$((total + runs))
done
printf "%14d  fuzz executions in all\n" "$total"
exit $rc
