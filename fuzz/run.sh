#!/usr/bin/env bash
# Runs every fuzz target built in BUILD_DIR for SECONDS each, starting from its committed seed
# corpus (fuzz/corpus/<target>/, read-only: new inputs go to a temporary folder), and prints one
# line per target: runs, coverage (edges), corpus size, and whether it found anything. A crash,
# leak, sanitizer report or timeout fails the run and leaves the input in FINDINGS_DIR.
# Usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
# The CI smoke run: fuzz/run.sh build-fuzz 8. A longer run: fuzz/run.sh build-fuzz 3600.
set -u
build=$1 secs=$2; shift 2
root=$(cd "$(dirname "$0")" && pwd)
findings=${FINDINGS_DIR:-$build/findings}
mkdir -p "$findings"
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in "$build"/fuzz_*; do [[ -x $f && -f $f ]] && targets+=("$(basename "$f")"); done
fi
fail=0
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  # -rss_limit_mb: every reader must stay far below 2 GB on any input; -timeout: one input may not
  # take more than 10 s (the quadratic tokenizer took minutes); leaks are findings too.
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -artifact_prefix="$findings/$t-" -print_final_stats=1 "$work" "$root/corpus/$t" \
    >"$work.log" 2>&1
  rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$work.log" | grep -oE '[0-9]+$')
  cov=$(grep -oE 'cov: [0-9]+' "$work.log" | tail -1 | grep -oE '[0-9]+')
  corp=$(grep -oE 'corp: [0-9]+' "$work.log" | tail -1 | grep -oE '[0-9]+')
  if ((rc == 0)); then
    printf '%-20s ok     %6s s %9s runs  cov %5s  corpus %5s\n' "$t" "$secs" "${runs:-?}" \
      "${cov:-?}" "${corp:-?}"
  else
    printf '%-20s FAILED (exit %s) after %s runs; input in %s\n' "$t" "$rc" "${runs:-?}" "$findings"
    grep -E 'ERROR|SUMMARY|==[0-9]+==|runtime error|deadly signal|Test unit written' "$work.log" |
      head -15 | sed 's/^/  | /'
    fail=1
  fi
  rm -rf "$work" "$work.log"
done
exit $fail
