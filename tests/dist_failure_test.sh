#!/usr/bin/env bash
# A rank that is killed, exits early or hangs during an all-reduce must end the whole job with a
# non-zero status within 30 s; a hang must be reported by the watchdog naming rank, operation and
# sequence number. Usage: dist_failure_test.sh MPIEXEC HELPER NP
set -u
mpiexec=$1 helper=$2 np=$3
source "$(dirname "$0")/../scripts/mpi_env.sh"
fail=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {  # run MODE -> sets rc, secs
  local start end
  start=$(date +%s.%N)
  timeout 60 "$mpiexec" -np "$np" "$helper" "$1" >"$log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  echo "mode $1 np $np: exit status $rc after $secs s"
}
check() {  # check CONDITION MESSAGE
  if ! eval "$1"; then echo "FAIL: $2"; cat "$log"; fail=1; fi
}
run ok
check '[ $rc -eq 0 ]' "healthy job should exit 0"
for mode in kill exit hang; do
  run $mode
  check '[ $rc -ne 0 ] && [ $rc -ne 124 ]' "$mode: job must end with a non-zero status (124 = hung)"
  fast=$(awk -v s="$secs" 'BEGIN { print (s < 30) ? 1 : 0 }')
  check '[ $fast -eq 1 ]' "$mode: job must end within 30 s"
done
check 'grep -Eq "watchdog: rank [0-9]+ \\(of $np\\): collective #[0-9]+ all_reduce" "$log"' \
  "hang: watchdog message naming rank, sequence number and operation"
grep -m1 "watchdog" "$log"
exit $fail
