#!/usr/bin/env bash
# Monitoring never stops or stalls a run (ctest label `service`; exit 77 without the servers'
# tools). Two cases, chosen by the first argument:
#   push   a 2-rank synthetic training with the Pushgateway down (a closed port) and with its
#          port blackholed (a socket that listens and never answers) ends with status 0, a
#          warning about its outcome push, and in about the time of the same run without a
#          gateway (asserted loosely: < 2 x + 10 s; the times are printed).
#   port   an exporter port already taken (rank 1's, metrics_port_base + 1): the run ends with
#          status 0 and rank 1 warns, naming the port and the way out.
# Usage: monitoring_faults_test.sh push|port PATH/TO/reid MPIEXEC   (from the repository root)
set -u
case=$1 reid=$2 mpiexec=$3
source "$(dirname "$0")/service_lib.sh"
service_require curl
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1

train_args=(--config=configs/synthetic_tiny.textproto
  --set='data { synthetic { ids: 16 images_per_id: 4 } num_workers: 1 }'
  --set='stage1 { max_epochs: 1 warmup_epochs: 1 }'
  --set='stage2 { max_epochs: 2 warmup_epochs: 1 eval_period: 2 }'
  --set='dist { intra_op_threads: 1 }')

train() {  # train NAME MONITORING_FIELDS: exit status in $rc, wall time (seconds) in $secs
  local name=$1 fields=$2 start
  start=$(date +%s.%N)
  "$mpiexec" -np 2 "$reid" train "${train_args[@]}" --output_dir="$SVC_DIR/$name" \
    --set="monitoring { $fields }" >"$SVC_DIR/$name.log" 2>&1
  rc=$?
  secs=$(elapsed "$start")
}

silent_listener() {  # silent_listener NAME PORT: a socket on PORT that never accepts
  svc_start "$1" "$SVC_PY" -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); print("listening", flush=True)
time.sleep(3600)' "$2"
  local _
  for _ in $(seq 100); do grep -q listening "$SVC_DIR/$1.log" && return 0; sleep 0.05; done
  echo "listener on $2 did not start"; return 1
}

faster_than() { awk -v t="$1" -v base="$2" 'BEGIN { exit !(t < 2 * base + 10) }'; }

if [[ $case == push ]]; then
  train base "metrics_port_base: 0"
  t_base=$secs
  check "no-gateway-finishes" '[[ $rc -eq 0 ]]' "$SVC_DIR/base.log"
  closed=$(free_port)
  train closed "metrics_port_base: 0 pushgateway_url: 'http://127.0.0.1:$closed'"
  t_closed=$secs
  check "closed-port-finishes" '[[ $rc -eq 0 ]]' "$SVC_DIR/closed.log"
  check "closed-port-warns" 'grep -q "monitoring: push to the Pushgateway at http://127.0.0.1:$closed failed: cannot connect" "$SVC_DIR/closed.log"' "$SVC_DIR/closed.log"
  hole=$(free_port)
  silent_listener blackhole "$hole" || exit 1
  train blackholed "metrics_port_base: 0 pushgateway_url: 'http://127.0.0.1:$hole'"
  t_hole=$secs
  check "blackholed-port-finishes" '[[ $rc -eq 0 ]]' "$SVC_DIR/blackholed.log"
  check "blackholed-port-warns" 'grep -q "monitoring: the Pushgateway at http://127.0.0.1:$hole did not answer within 3.0 s" "$SVC_DIR/blackholed.log"' "$SVC_DIR/blackholed.log"
  printf '     wall time: no gateway %.1f s, closed port %.1f s, blackholed port %.1f s\n' \
    "$t_base" "$t_closed" "$t_hole"
  check "closed-port-in-time" 'faster_than "$t_closed" "$t_base"'
  check "blackholed-port-in-time" 'faster_than "$t_hole" "$t_base"'
elif [[ $case == port ]]; then
  base=$(free_port_pair)
  silent_listener taken $((base + 1)) || exit 1
  train taken "metrics_port_base: $base"
  printf '     wall time %.1f s\n' "$secs"
  check "port-taken-finishes" '[[ $rc -eq 0 ]]' "$SVC_DIR/taken.log"
  check "port-taken-warns" 'grep -q "monitoring: rank 1: cannot serve metrics on 127.0.0.1:$((base + 1)) (Address already in use).*monitoring.metrics_port_base.*metrics_port_base: 0" "$SVC_DIR/taken.log"' "$SVC_DIR/taken.log"
  check "rank-0-serves" '! grep -q "rank 0: cannot serve metrics" "$SVC_DIR/taken.log" &&
    grep -q "serves metrics on http://127.0.0.1:$base/metrics" "$SVC_DIR/taken/logs/rank0.log"' "$SVC_DIR/taken.log"
else
  echo "usage: $0 push|port PATH/TO/reid MPIEXEC"; exit 2
fi
service_finish
