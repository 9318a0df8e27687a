#!/usr/bin/env bash
# promtool over the shipped Prometheus files: the scrape config (and the alert rules it loads), the
# rules, the rules' unit tests (alerts_test.yml), and the syntax of every PromQL expression of the
# dashboard and the alerts (written by tests/monitoring_check.py, checked as recording rules).
# Usage: tests/monitoring_promtool_test.sh (from the repository root). Exit 77 without promtool.
set -u
if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool is missing (apt-get install prometheus)"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
run() {  # run NAME command...: prints ok/FAIL and the command's output on failure
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL $name"; sed 's/^/  | /' "$tmp/out" | head -40; fail=$((fail + 1))
  fi
}
run check-config promtool check config monitoring/prometheus/prometheus.yml
run check-rules promtool check rules monitoring/prometheus/alerts.yml
run test-rules promtool test rules monitoring/prometheus/alerts_test.yml

# Every expression, each as a recording rule: promtool parses them all (dashboard queries too).
/usr/bin/python3 tests/monitoring_check.py --promql-out "$tmp/all.promql" --with cuda,dcgm,pushgateway,failed,scheduled,hour \
  >"$tmp/check.log" 2>&1
rc=$?
if ((rc == 77)); then cat "$tmp/check.log"; exit 77; fi
run extract test $rc -eq 0
{
  echo "groups:"
  echo "  - name: reid-promql-syntax"
  echo "    rules:"
  n=0
  while IFS= read -r expr; do
    [[ -z $expr || $expr == \#* ]] && continue
    n=$((n + 1))
    printf '      - record: reid_check:expr_%d\n        expr: %s\n' "$n" \
      "$(/usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$expr")"
  done <"$tmp/all.promql"
} >"$tmp/syntax.yml"
run promql-syntax promtool check rules "$tmp/syntax.yml"
grep -c 'record:' "$tmp/syntax.yml" | sed 's/^/     expressions parsed: /'
echo "$fail failed"
((fail == 0))
