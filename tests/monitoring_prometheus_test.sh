#!/usr/bin/env bash
# Two runs in one real Prometheus, as on a shared cluster: run-a, a 2-rank synthetic `reid train`
# (one exporter per rank on metrics_port_base + local rank), runs to its end and pushes its
# outcome to a real Pushgateway; run-b, another 2-rank run started at the same time, is stopped
# mid-stage (SIGSTOP to its rank 1; rank 0 then waits in its next collective). Prometheus loads
# monitoring/prometheus/alerts.yml with the no-progress and exporter-down thresholds shortened
# (10 min -> 8 s; the rules' own thresholds are covered by alerts_test.yml). Checks, through
# Prometheus's HTTP API: ReidTrainingNoProgress fires for run-b and never for run-a (not even
# pending), while run-a's exporters are still up; ReidExporterDown names run-b's rank 1; every
# reid_ family of both ranks of run-a carries run="run-a"; the Pushgateway holds run-a's outcome
# and nothing else (reid_run_* under job + run; no live series); history.jsonl. ctest label
# `service`; exit 77 without Prometheus.
# Usage: monitoring_prometheus_test.sh PATH/TO/reid MPIEXEC  (from the repo root)
#
# PromQL (the dashboard and alert rules): every expression that tests/monitoring_check.py
# extracts from monitoring/ is run against this Prometheus after the training; REID_PROMQL_FILE=FILE
# runs those of FILE instead (one per line; blank lines and lines starting with # are skipped),
# and fails for each one that errors or returns no data. An expression is evaluated at the time
# of run-a's last successful scrape (the exporters' series go stale as soon as the processes
# exit), when that gives nothing in the middle of run-a (when run-b's alert fired: a stage's ETA),
# and then at the current time (the series scraped from the Pushgateway). Grafana variables are replaced first: $job and ${job} by "reid" (the exporters'
# scrape job here), $run, ${run}, $rank, ${rank}, $instance, ${instance} by ".*",
# $__rate_interval by 1m, $__interval by 5s, $__range by 5m. An alert condition has data only
# while it fires: list alert expressions without their threshold comparison.
#   REID_PROMQL_FILE=monitoring/promql.txt ctest -R monitoring_prometheus --output-on-failure
# KEEP=1 keeps the temporary folder (Prometheus TSDB, logs, run directories).
set -u
reid=$1 mpiexec=$2
source "$(dirname "$0")/service_lib.sh"
service_require prometheus promtool prometheus-pushgateway curl
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1

# The tiny config shrunk: 32 ids x 8 images, 1 + 30 epochs, an evaluation after every fifth stage-2
# epoch, so that the run is scraped several times after its first evaluation. run-b: a long
# stage 1 on less data, stopped long before its end.
train_args=(--config=configs/synthetic_tiny.textproto
  --set='data { synthetic { ids: 32 images_per_id: 8 } num_workers: 1 }'
  --set='stage1 { max_epochs: 1 warmup_epochs: 1 log_period: 2 }'
  --set='stage2 { max_epochs: 30 warmup_epochs: 1 eval_period: 5 log_period: 2 checkpoint_period: 10 }'
  --set='dist { intra_op_threads: 1 }')
b_args=(--config=configs/synthetic_tiny.textproto
  --set='data { synthetic { ids: 16 images_per_id: 4 } num_workers: 1 }'
  --set='stage1 { max_epochs: 200 warmup_epochs: 1 log_period: 1 }'
  --set='dist { intra_op_threads: 1 timeout_s: 600 }')

# The shipped rules with ReidTrainingNoProgress's 10 minutes (600 s, [10m], offset 10m, for 1m)
# and ReidExporterDown's 2 minutes shortened to seconds; everything else as shipped.
"$SVC_PY" - "$SVC_DIR/rules.yml" <<'EOF' || { echo "FAIL: rules"; exit 1; }
import sys, yaml
doc = yaml.safe_load(open('monitoring/prometheus/alerts.yml'))
changed = 0
for group in doc['groups']:
    for rule in group['rules']:
        if rule.get('alert') == 'ReidTrainingNoProgress':
            e = rule['expr']
            rule['expr'] = (e.replace('> 600', '> 8').replace('[10m]', '[8s]')
                            .replace('offset 10m', 'offset 8s'))
            changed += e.count('> 600') + e.count('[10m]') + e.count('offset 10m')
            rule['for'] = '1s'
        if rule.get('alert') == 'ReidExporterDown':
            rule['for'] = '3s'
assert changed == 3, changed
yaml.safe_dump(doc, open(sys.argv[1], 'w'), sort_keys=False)
EOF

prom=$(free_port)
pgw=$(free_port)
base=$(free_port_pair)
base_b=$(free_port_pair)
cat >"$SVC_DIR/scrape.yml" <<EOF
  - job_name: reid
    static_configs: [{targets: ['127.0.0.1:$base', '127.0.0.1:$((base + 1))',
                                '127.0.0.1:$base_b', '127.0.0.1:$((base_b + 1))']}]
  - job_name: pushgateway
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$pgw']}]
EOF
t0=$(date +%s.%N)
start_prometheus "$prom" "$SVC_DIR/scrape.yml" "$SVC_DIR/rules.yml" || exit 1
start_pushgateway "$pgw" || exit 1
wait_scraping "$prom" 5 || exit 1
printf 'servers ready in %.1f s (Prometheus 127.0.0.1:%s, Pushgateway :%s, exporters :%s-%s, :%s-%s)\n' \
  "$(elapsed "$t0")" "$prom" "$pgw" "$base" "$((base + 1))" "$base_b" "$((base_b + 1))"

run="$SVC_DIR/run-prom"
t1=$(date +%s.%N)
"$mpiexec" -np 2 "$reid" train "${train_args[@]}" --output_dir="$run" --set='name: "run-a"' \
  --set="monitoring { metrics_port_base: $base pushgateway_url: 'http://127.0.0.1:$pgw' }" \
  >"$SVC_DIR/train.log" 2>&1 &
train_pid=$!
svc_start run-b "$mpiexec" -np 2 "$reid" train "${b_args[@]}" --output_dir="$SVC_DIR/run-b" \
  --set='name: "run-b"' --set="monitoring { metrics_port_base: $base_b }"
b_pid=$SVC_PID

rank_pid() {  # rank_pid MPIRUN_PID RANK: the PID of that rank (a child of mpirun)
  local p
  for p in $(pgrep -P "$1"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" &&
      { echo "$p"; return 0; }
  done
  return 1
}
firing() {  # firing ALERTNAME RUN: 0 when Prometheus has that alert firing for that run
  curl -sf --max-time 5 "http://127.0.0.1:$prom/api/v1/alerts" | "$SVC_PY" -c '
import json, sys
a = json.load(sys.stdin)["data"]["alerts"]
sys.exit(0 if any(x["labels"].get("alertname") == sys.argv[1] and x["labels"].get("run") == sys.argv[2]
                  and x["state"] == "firing" for x in a) else 1)' "$1" "$2"
}

# run-b: stopped in the middle of stage 1 (its rank 1 frozen, rank 0 waiting on it).
# First Prometheus must have scraped its rank 1 once: ReidExporterDown takes the run and rank
# labels from the target's last scraped series.
b1_seen() {
  [[ $(prom_series "$prom" "reid_process_start_time_seconds{run=\"run-b\",rank=\"1\"}") -eq 1 ]]
}
for _ in $(seq 600); do
  grep -q "^stage 1 epoch 3/" "$SVC_DIR/run-b.log" && b1_seen && break
  sleep 0.1
done
b1=$(rank_pid "$b_pid" 1)
check "run-b-reached-stage-1" '[[ -n $b1 ]] && grep -q "^stage 1 epoch 3/" "$SVC_DIR/run-b.log" && b1_seen' "$SVC_DIR/run-b.log"
kill -STOP "$b1" 2>/dev/null
t_stop=$(date +%s.%N) at_stop=$(elapsed "$t1")
fired="" t_mid=""
for _ in $(seq 900); do
  if firing ReidTrainingNoProgress run-b; then
    fired=$(elapsed "$t_stop") t_mid=$(date +%s.%N)
    break
  fi
  sleep 0.1
done
printf 'run-b stopped %.1f s after the start; ReidTrainingNoProgress fired for it %s s later\n' \
  "$at_stop" "${fired:-(never)}"
a_up=$(prom_series "$prom" "up{instance=~\"127.0.0.1:($base|$((base + 1)))\"} == 1")
check "no-progress-fires-for-the-stopped-run" '[[ -n $fired ]]'
check "the-other-run-still-scraped-meanwhile" '[[ $a_up -eq 2 ]] && kill -0 $train_pid'
down=""
for _ in $(seq 100); do firing ReidExporterDown run-b && { down=1; break; }; sleep 0.1; done
curl -sf --max-time 5 "http://127.0.0.1:$prom/api/v1/alerts" >"$SVC_DIR/alerts.json"
check "exporter-down-names-run-and-rank" '[[ -n $down ]] && [[ $(prom_series "$prom" "ALERTS{alertname=\"ReidExporterDown\",alertstate=\"firing\",run=\"run-b\",rank=\"1\"}") -eq 1 ]]' "$SVC_DIR/alerts.json"
kill -CONT "$b1" 2>/dev/null
svc_stop "$b_pid"

wait $train_pid
rc=$?
printf 'training run-a: %.1f s, exit %d\n' "$(elapsed "$t1")" "$rc"
# The longest pause between two of run-a's steps that Prometheus saw (the shortened no-progress
# threshold, 8 s, must stay above it).
prom_query "$prom" "reid_last_step_timestamp_seconds{job=\"reid\",run=\"run-a\",rank=\"0\"}[10m]" |
  "$SVC_PY" -c '
import json, sys
r = json.load(sys.stdin)["result"]
v = sorted({float(x) for s in r for _, x in s["values"] if float(x) > 0})
print("     run-a: longest pause between steps %.1f s" % max((b - a for a, b in zip(v, v[1:])), default=0))'

check "training-finished" '[[ $rc -eq 0 ]]' "$SVC_DIR/train.log"
check "no-monitoring-warning" '! grep -q "monitoring:" "$SVC_DIR/train.log"' "$SVC_DIR/train.log"
# Over the whole test, run-a never had a no-progress alert, pending or firing.
check "no-progress-never-for-the-running-run" '[[ $(prom_series "$prom" "ALERTS{alertname=\"ReidTrainingNoProgress\",run=\"run-a\"}[10m]") -eq 0 ]]'

# Presence over the whole run: a range selector returns every scraped sample, stale or not.
ranks_of() {  # ranks_of EXPR: the sorted distinct rank labels of the series of EXPR[10m]
  prom_query "$prom" "$1[10m]" | "$SVC_PY" -c '
import json, sys
print(" ".join(sorted({s["metric"].get("rank", "-") for s in json.load(sys.stdin)["result"]})))'
}
a='job="reid",run="run-a"'
check "loss-both-ranks" '[[ $(ranks_of "reid_loss{$a,loss=\"total\"}") == "0 1" ]]'
for loss in supcon id triplet i2t; do
  check "loss-$loss" '[[ $(ranks_of "reid_loss{$a,loss=\"$loss\"}") == "0 1" ]]'
done
check "map-both-ranks" '[[ $(ranks_of "reid_eval_map_ratio{$a}") == "0 1" ]]'
for m in reid_learning_rate reid_samples_total reid_steps_total reid_epoch reid_step_seconds_bucket \
  reid_compute_seconds_bucket reid_data_wait_seconds_bucket reid_allreduce_seconds_bucket \
  reid_allreduce_bus_bandwidth_bytes_per_second reid_eval_rank1_ratio reid_eval_best_map_ratio \
  reid_eval_best_rank1_ratio reid_evals_total reid_checkpoint_last_timestamp_seconds \
  reid_checkpoint_last_size_bytes reid_unreadable_images_total reid_nonfinite_steps_skipped_total \
  reid_loss_scale reid_process_resident_memory_bytes reid_build_info \
  reid_last_step_timestamp_seconds reid_process_start_time_seconds reid_stage_done_steps \
  reid_stage_planned_steps reid_stage_planned_epochs; do
  check "$m" '[[ $(ranks_of "$m{$a}") == "0 1" ]]'
done
# No series of run-a's exporters without the run label; the progress of stage 2 reached its plan.
check "every-series-has-run" '[[ $(prom_series "$prom" "count by (__name__) (last_over_time({__name__=~\"reid_.*\",job=\"reid\",run=\"\"}[10m]))") -eq 0 ]]'
done_steps=$(prom_query "$prom" "max_over_time(reid_stage_done_steps{$a,rank=\"0\",stage=\"2\"}[10m]) - max_over_time(reid_stage_planned_steps{$a,rank=\"0\",stage=\"2\"}[10m])" |
  "$SVC_PY" -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r[0]["value"][1] if r else "none")')
check "progress-reaches-the-plan" '[[ $done_steps == 0 ]]'
evals=$(prom_query "$prom" "max_over_time(reid_evals_total{$a,rank=\"0\"}[10m])" |
  "$SVC_PY" -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r[0]["value"][1] if r else 0)')
check "evaluations-scraped" '[[ $evals -ge 2 ]]'

# The outcome, pushed by rank 0 under job=reid_train (monitoring.job), run=run-a: through
# Prometheus, and on the Pushgateway itself nothing but the outcome.
key='job="reid_train",run="run-a"'
summary=0
for _ in $(seq 100); do
  summary=$(prom_series "$prom" "reid_run_exit_reason_info{$key,reason=\"finished\"} == 1")
  [[ $summary -ge 1 ]] && break
  sleep 0.1
done
check "outcome-exit-reason" '[[ $summary -eq 1 ]]'
check "outcome-exit-status-0" '[[ $(prom_series "$prom" "reid_run_exit_status{$key} == 0") -eq 1 ]]'
for m in reid_run_map_ratio reid_run_rank1_ratio reid_run_duration_seconds \
  reid_run_last_success_timestamp_seconds; do
  check "outcome-$m" '[[ $(prom_series "$prom" "$m{$key}") -eq 1 ]]'
done
curl -sf "http://127.0.0.1:$pgw/metrics" >"$SVC_DIR/pushgateway.txt"
others=$(grep -v '^#' "$SVC_DIR/pushgateway.txt" | grep 'run="run-a"' |
  grep -vE '^(reid_run_(exit_reason_info|exit_status|duration_seconds|map_ratio|rank1_ratio|last_success_timestamp_seconds)|push_time_seconds|push_failure_time_seconds)\{' || true)
families=$(grep -v '^#' "$SVC_DIR/pushgateway.txt" | grep '^reid_' | sed 's/[{ ].*//' | sort -u | tr '\n' ' ')
echo "     Pushgateway: $families"
check "pushgateway-holds-only-the-outcome" '[[ -z $others ]] && [[ $families == "reid_run_duration_seconds reid_run_exit_reason_info reid_run_exit_status reid_run_last_success_timestamp_seconds reid_run_map_ratio reid_run_rank1_ratio " ]]' "$SVC_DIR/pushgateway.txt"
check "pushgateway-grouping-key" 'grep -q "^reid_run_exit_reason_info{instance=\"\",job=\"reid_train\",reason=\"finished\",run=\"run-a\"} 1" "$SVC_DIR/pushgateway.txt"'

# history.jsonl (rank 0): a STEP line per log interval, an EVAL line per evaluation.
steps=$(grep -c '"kind":"STEP"' "$run/history.jsonl")
evals=$(grep -c '"kind":"EVAL"' "$run/history.jsonl")
echo "     history.jsonl: $steps STEP and $evals EVAL lines"
check "history" '[[ $steps -ge 6 && $evals -eq 6 ]] && grep -q "\"imagesPerS\":" "$run/history.jsonl" &&
  grep "\"kind\":\"EVAL\"" "$run/history.jsonl" | tail -1 | grep -q "\"cmc\":\[[0-9.e-]*,"'

# The PromQL hook: by default every expression of the shipped dashboard and alert rules
# (tests/monitoring_check.py --promql-out; the CUDA and DCGM panels are left out on a CPU run).
if [[ -z ${REID_PROMQL_FILE:-} ]]; then
  REID_PROMQL_FILE=$SVC_DIR/promql.txt
  "$SVC_PY" tests/monitoring_check.py --promql-out "$REID_PROMQL_FILE" --with=pushgateway . >/dev/null ||
    check "promql-extract" false
fi
if [[ -n ${REID_PROMQL_FILE:-} ]]; then
  # The last time both of run-a's exporters were scraped successfully.
  t_last=$(prom_query "$prom" "up{instance=~\"127.0.0.1:($base|$((base + 1)))\"}[10m]" | "$SVC_PY" -c '
import json, sys
r = json.load(sys.stdin)["result"]
print(min(max(float(t) for t, v in s["values"] if v == "1") for s in r))')
  n=0
  while IFS= read -r line || [[ -n $line ]]; do
    expr=$(printf '%s' "$line" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    [[ -z $expr || $expr == \#* ]] && continue
    n=$((n + 1))
    q=$(printf '%s' "$expr" | sed -e 's/\${\?job}\?/reid/g' -e 's/\${\?rank}\?/.*/g' -e 's/\${\?run}\?/.*/g' \
      -e 's/\${\?instance}\?/.*/g' -e 's/\${\?__rate_interval}\?/1m/g' \
      -e 's/\${\?__interval}\?/5s/g' -e 's/\${\?__range}\?/5m/g')
    err=$(prom_query "$prom" "$q" "$t_last" 2>&1 >/dev/null)
    got=$(prom_series "$prom" "$q" "$t_last" 2>/dev/null)
    [[ ${got:-0} -eq 0 && -z $err && -n $t_mid ]] && got=$(prom_series "$prom" "$q" "$t_mid" 2>/dev/null)
    [[ ${got:-0} -eq 0 && -z $err ]] && got=$(prom_series "$prom" "$q" 2>/dev/null)
    check "promql: $expr" '[[ -z $err && ${got:-0} -gt 0 ]]'
    [[ -n $err ]] && echo "     error: $err"
  done <"$REID_PROMQL_FILE"
  echo "     $n PromQL expressions from $REID_PROMQL_FILE"
fi
service_finish
