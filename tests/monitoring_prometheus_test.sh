#!/usr/bin/env bash
# A real Prometheus scrapes a 2-rank synthetic `reid train` (one exporter per rank on
# metrics_port_base + local rank) and a real Pushgateway receives rank 0's end-of-run summary,
# which Prometheus scrapes from there (honor_labels: true). Checks, through Prometheus's HTTP API:
# reid_loss series of both ranks, the mAP gauge of both after evaluation, the other reid_ families,
# the summary under job + run; and history.jsonl. ctest label `service`; exit 77 without
# Prometheus. Usage: monitoring_prometheus_test.sh PATH/TO/reid MPIEXEC  (from the repo root)
#
# PromQL (the dashboard and alert rules): every expression that tests/monitoring_check.py
# extracts from monitoring/ is run against this Prometheus after the training; REID_PROMQL_FILE=FILE
# runs those of FILE instead (one per line; blank lines and lines starting with # are skipped) against this Prometheus
# after the training, and fails for each one that errors or returns no data. An expression is
# evaluated at the time of the training's last successful scrape (the exporters' series go stale
# as soon as the processes exit) and, when that gives nothing, at the current time (the series
# scraped from the Pushgateway). Grafana variables are replaced first: $job and ${job} by "reid"
# (the exporters' scrape job here), $rank, ${rank}, $instance, ${instance} by ".*",
# $__rate_interval by 1m, $__interval by 5s, $__range by 5m. An alert condition has data only
# while it fires: list alert expressions without their threshold comparison.
#   REID_PROMQL_FILE=monitoring/promql.txt ctest -R monitoring_prometheus --output-on-failure
# KEEP=1 keeps the temporary folder (Prometheus TSDB, logs, run directory).
set -u
reid=$1 mpiexec=$2
source "$(dirname "$0")/service_lib.sh"
service_require prometheus promtool prometheus-pushgateway curl
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1

# The tiny config shrunk: 32 ids x 8 images, 1 + 6 epochs, an evaluation after every stage-2
# epoch, so that the run is scraped several times after its first evaluation.
train_args=(--config=configs/synthetic_tiny.textproto
  --set='data { synthetic { ids: 32 images_per_id: 8 } num_workers: 1 }'
  --set='stage1 { max_epochs: 1 warmup_epochs: 1 log_period: 2 }'
  --set='stage2 { max_epochs: 6 warmup_epochs: 1 eval_period: 1 log_period: 2 checkpoint_period: 3 }'
  --set='dist { intra_op_threads: 1 }')

prom=$(free_port)
pgw=$(free_port)
base=$(free_port_pair)
cat >"$SVC_DIR/scrape.yml" <<EOF
  - job_name: reid
    static_configs: [{targets: ['127.0.0.1:$base', '127.0.0.1:$((base + 1))']}]
  - job_name: pushgateway
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$pgw']}]
EOF
t0=$(date +%s.%N)
start_prometheus "$prom" "$SVC_DIR/scrape.yml" || exit 1
start_pushgateway "$pgw" || exit 1
wait_scraping "$prom" 3 || exit 1
printf 'servers ready in %.1f s (Prometheus 127.0.0.1:%s, Pushgateway :%s, exporters :%s-%s)\n' \
  "$(elapsed "$t0")" "$prom" "$pgw" "$base" "$((base + 1))"

run="$SVC_DIR/run-prom"
t1=$(date +%s.%N)
"$mpiexec" -np 2 "$reid" train "${train_args[@]}" --output_dir="$run" \
  --set="monitoring { metrics_port_base: $base pushgateway_url: 'http://127.0.0.1:$pgw' }" \
  >"$SVC_DIR/train.log" 2>&1
rc=$?
printf 'training: %.1f s, exit %d\n' "$(elapsed "$t1")" "$rc"
check "training-finished" '[[ $rc -eq 0 ]]' "$SVC_DIR/train.log"
check "no-monitoring-warning" '! grep -q "monitoring:" "$SVC_DIR/train.log"' "$SVC_DIR/train.log"

# Presence over the whole run: a range selector returns every scraped sample, stale or not.
ranks_of() {  # ranks_of EXPR: the sorted distinct rank labels of the series of EXPR[10m]
  prom_query "$prom" "$1[10m]" | "$SVC_PY" -c '
import json, sys
print(" ".join(sorted({s["metric"].get("rank", "-") for s in json.load(sys.stdin)["result"]})))'
}
check "loss-both-ranks" '[[ $(ranks_of "reid_loss{job=\"reid\",loss=\"total\"}") == "0 1" ]]'
for loss in supcon id triplet i2t; do
  check "loss-$loss" '[[ $(ranks_of "reid_loss{job=\"reid\",loss=\"$loss\"}") == "0 1" ]]'
done
check "map-both-ranks" '[[ $(ranks_of "reid_eval_map_ratio{job=\"reid\"}") == "0 1" ]]'
for m in reid_learning_rate reid_samples_total reid_steps_total reid_epoch reid_step_seconds_bucket \
  reid_compute_seconds_bucket reid_data_wait_seconds_bucket reid_allreduce_seconds_bucket \
  reid_allreduce_bus_bandwidth_bytes_per_second reid_eval_rank1_ratio reid_eval_best_map_ratio \
  reid_eval_best_rank1_ratio reid_evals_total reid_checkpoint_last_timestamp_seconds \
  reid_checkpoint_last_size_bytes reid_unreadable_images_total reid_nonfinite_steps_skipped_total \
  reid_loss_scale reid_process_resident_memory_bytes reid_build_info \
  reid_last_step_timestamp_seconds; do
  check "$m" '[[ $(ranks_of "$m{job=\"reid\"}") == "0 1" ]]'
done
evals=$(prom_query "$prom" 'max_over_time(reid_evals_total{job="reid",rank="0"}[10m])' |
  "$SVC_PY" -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r[0]["value"][1] if r else 0)')
check "evaluations-scraped" '[[ $evals -ge 2 ]]'

# The end-of-run summary, pushed by rank 0 under job=reid_train (monitoring.job), run=run-prom.
key='job="reid_train",run="run-prom"'
summary=0
for _ in $(seq 100); do
  summary=$(prom_series "$prom" "reid_run_exit_reason_info{$key,reason=\"finished\"} == 1")
  [[ $summary -ge 1 ]] && break
  sleep 0.1
done
check "summary-exit-reason" '[[ $summary -eq 1 ]]'
for m in reid_run_map_ratio reid_run_rank1_ratio reid_run_duration_seconds \
  reid_run_last_success_timestamp_seconds 'reid_run_final_loss{loss="total"}' \
  'reid_run_final_loss{loss="i2t"}' 'reid_loss{rank="0",stage="2",loss="total"}'; do
  sel=$m
  [[ $m == *"{"* ]] && sel="${m%\}},$key}" || sel="$m{$key}"
  check "summary-$m" '[[ $(prom_series "$prom" "$sel") -eq 1 ]]'
done
check "pushgateway-grouping-key" 'curl -sf "http://127.0.0.1:$pgw/metrics" |
  grep -q "^reid_run_exit_reason_info{instance=\"\",job=\"reid_train\",reason=\"finished\",run=\"run-prom\"} 1"'

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
  # The last time both exporters were scraped successfully.
  t_last=$(prom_query "$prom" 'up{job="reid"}[10m]' | "$SVC_PY" -c '
import json, sys
r = json.load(sys.stdin)["result"]
print(min(max(float(t) for t, v in s["values"] if v == "1") for s in r))')
  n=0
  while IFS= read -r line || [[ -n $line ]]; do
    expr=$(printf '%s' "$line" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    [[ -z $expr || $expr == \#* ]] && continue
    n=$((n + 1))
    q=$(printf '%s' "$expr" | sed -e 's/\${\?job}\?/reid/g' -e 's/\${\?rank}\?/.*/g' \
      -e 's/\${\?instance}\?/.*/g' -e 's/\${\?__rate_interval}\?/1m/g' \
      -e 's/\${\?__interval}\?/5s/g' -e 's/\${\?__range}\?/5m/g')
    err=$(prom_query "$prom" "$q" "$t_last" 2>&1 >/dev/null)
    got=$(prom_series "$prom" "$q" "$t_last" 2>/dev/null)
    [[ ${got:-0} -eq 0 && -z $err ]] && got=$(prom_series "$prom" "$q" 2>/dev/null)
    check "promql: $expr" '[[ -z $err && ${got:-0} -gt 0 ]]'
    [[ -n $err ]] && echo "     error: $err"
  done <"$REID_PROMQL_FILE"
  echo "     $n PromQL expressions from $REID_PROMQL_FILE"
fi
service_finish
