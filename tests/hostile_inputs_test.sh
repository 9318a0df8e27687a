#!/usr/bin/env bash
# Regression tests of the hostile-probe issue on signals, reid-launch, regular files and configs
# that validated and then aborted: each case below hung, aborted, exited 1 or lost the run
# before. Inputs come from tests/hostile/make_hostile_inputs.py (FIFOs included).
#   1. SIGINT in stage 1 and SIGHUP in stage 2 checkpoint and exit 0; a second SIGINT within 5 s
#      exits 130 at once.
#   2. reid-launch: a job exiting 2 is not restarted; quick failures back off; --nproc_per_node
#      is bounded by the cores without GPUs; hostfiles follow a grammar and must be regular files.
#   3. A FIFO as a meta CSV, features, --out_json, --visualize_out, config, BPE vocabulary,
#      weights, texts file, CSV list or history.jsonl is exit 2 naming it within seconds; FIFOs as
#      grid images or a dataset image are unreadable images, counted.
#   4. base_lr 1e300 is exit 2 naming the field; report.html as a directory is one warning
#      (training) or exit 2 (reid report); 4096x4096 images are exit 2 with the memory figure.
# Usage: hostile_inputs_test.sh PATH/TO/reid PATH/TO/reid-launch   (from the repository root)
set -u
reid=$(realpath "$1") launch=$(realpath "$2")
py=/usr/bin/python3
source "$(dirname "$0")/cli_lib.sh"
for tool in "$py" mkfifo timeout; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing"; exit 77; }
done
export OMP_NUM_THREADS=1
hx=$tmp/hx
$py tests/hostile/make_hostile_inputs.py "$hx" || { echo "FAIL: make_hostile_inputs.py"; exit 1; }

# hostile NAME SECONDS WANT PATTERN -- command...: exit status WANT within SECONDS (killed after:
# a hang fails), at most 6 lines and 1,500 bytes of output, matching PATTERN (extended regex).
hostile() {
  local name=$1 limit=$2 want=$3 pattern=$4; shift 5
  local start=$SECONDS
  timeout -s KILL "$limit" "$@" >"$tmp/out" 2>&1 </dev/null
  local got=$? took=$((SECONDS - start)) lines bytes
  lines=$(wc -l <"$tmp/out"); bytes=$(wc -c <"$tmp/out")
  if [[ $got -ne $want ]] || ! grep -qE -- "$pattern" "$tmp/out" || ((lines > 6 || bytes > 1500))
  then
    echo "FAIL $name: status $got (want $want) after ${took}s, $lines lines, pattern '$pattern'"
    head -c 800 "$tmp/out" | sed 's/^/  | /'
    fail=$((fail + 1))
  else
    echo "ok   $name (${took}s)"
  fi
}
check() {  # check NAME CONDITION [log]
  if eval "$2"; then echo "ok   $1"; else
    echo "FAIL $1"; [[ -n ${3:-} ]] && tail -15 "$3" | sed 's/^/  | /'; fail=$((fail + 1)); fi
}

# --- 2. reid-launch, with a stand-in for mpirun that runs the command once (no MPI needed) ---
fake=$tmp/fake-mpirun
cat >"$fake" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do
  case $1 in
    -np|--map-by|--bind-to|--hostfile|-x) shift 2 ;;
    --oversubscribe) shift ;;
    *) break ;;
  esac
done
exec "$@"
EOF
chmod +x "$fake"
L=("$launch" --mpirun="$fake")
hostile launch-user-error-not-restarted 20 2 'job exited with status 2 \(a user error.*not restarting' \
  -- "${L[@]}" --max_restarts=1000000 --restart_delay_s=0 -- /bin/sh -c 'exit 2'
# Quick failures with --restart_delay_s=0: 0, 2, 4 s apart, so 7 s hold at most 4 attempts
# (5,641 restarts in 15 s before).
timeout -s INT 7 "${L[@]}" --max_restarts=1000000 --restart_delay_s=0 -- /bin/sh -c 'exit 3' \
  >"$tmp/backoff.log" 2>&1
n=$(grep -c "^reid-launch: attempt " "$tmp/backoff.log")
echo "     7 s of a job failing at once: $n attempts"
check "launch-backoff ($n attempts)" '((n >= 2 && n <= 5)) && grep -q "failure 3 in a row: back-off" "$tmp/backoff.log"' "$tmp/backoff.log"
cores=$(nproc)
hostile launch-nproc-over-cores 20 2 "nproc_per_node=1000000: no GPU visible and only [0-9]+ core\(s\) usable here" \
  -- env CUDA_VISIBLE_DEVICES= "${L[@]}" --nproc_per_node=1000000 -- "$reid" version
hostile launch-nproc-oversubscribe 60 0 "^reid-launch: [0-9]+ rank\(s\) per node" \
  -- env CUDA_VISIBLE_DEVICES= "${L[@]}" --nproc_per_node=$((cores + 1)) --oversubscribe -- /bin/true
hf=$hx/hostfiles
hostile launch-hostfile-binary 20 2 "hostfile=.*binary:1: '\\\\x89PNG.*' is not a host name" \
  -- "${L[@]}" --hostfile="$hf/binary" -- /bin/true
hostile launch-hostfile-bad-line 20 2 "bad_line:3: 'node_2' is not a host name \(RFC 1123\), IPv4 or IPv6 address" \
  -- "${L[@]}" --hostfile="$hf/bad_line" -- /bin/true
hostile launch-hostfile-bad-slots 20 2 "bad_slots:2: 'slots=lots' after the host" \
  -- "${L[@]}" --hostfile="$hf/bad_slots" -- /bin/true
hostile launch-hostfile-fifo 20 2 "hostfile: .*fifo: not a regular file \(a FIFO\)" \
  -- "${L[@]}" --hostfile="$hf/fifo" -- /bin/true
hostile launch-hostfile-dev-zero 20 2 "hostfile: /dev/zero: not a regular file \(a character device\)" \
  -- "${L[@]}" --hostfile=/dev/zero -- /bin/true
hostile launch-hostfile-good 60 0 "3 node\(s\) through mpirun" \
  -- "${L[@]}" --nproc_per_node=1 --hostfile="$hf/good" -- /bin/true

# --- 3. FIFOs where regular files are expected: exit 2 naming them, never a hang -------------
e=$hx/eval
ev=("$reid" eval --query_features="$e/q.npy" --gallery_features="$e/g.npy" --query_meta="$e/q.csv"
  --gallery_meta="$e/g.csv")
hostile eval-good 60 0 "^eval \| mAP" -- "${ev[@]}"
hostile eval-meta-fifo 30 2 "meta_fifo.csv: not a regular file \(a FIFO\)" -- "${ev[@]}" --query_meta="$e/meta_fifo.csv"
hostile eval-features-fifo 30 2 "features_fifo.npy: not a regular file \(a FIFO\)" -- "${ev[@]}" --gallery_features="$e/features_fifo.npy"
hostile eval-out-json-fifo 30 2 "out_json: .*out_fifo.json: exists and is not a regular file \(a FIFO\)" -- "${ev[@]}" --out_json="$e/out_fifo.json"
hostile eval-out-json-dir 30 2 "out_json: .*out_dir.json: exists and is not a regular file \(a directory\)" -- "${ev[@]}" --out_json="$e/out_dir.json"
hostile eval-visualize-out-fifo 30 2 "visualize_out: .*grid_fifo.jpg: exists and is not a regular file \(a FIFO\)" -- "${ev[@]}" --visualize=2 --visualize_out="$e/grid_fifo.jpg"
# Every image of the grid is a FIFO named like a JPEG: drawn grey and counted, not waited on.
hostile eval-grid-images-fifo 60 0 "retrieval grid: .*grid.jpg \(2 queries, 22 images unreadable \(grey\)\)" -- "${ev[@]}" --visualize=2 --visualize_out="$tmp/grid.jpg"
f=$hx/fifos
hostile config-fifo 30 2 "config.textproto: not a regular file \(a FIFO\)" -- "$reid" print-config --config="$f/config.textproto"
hostile bpe-vocab-fifo 30 2 "bpe_vocab.txt.gz: not a regular file \(a FIFO\)" -- "$reid" tokenize --bpe_vocab="$f/bpe_vocab.txt.gz"
hostile weights-fifo 30 2 "weights file '.*weights.pth' \(not a readable regular file: not a regular file \(a FIFO\)\)" \
  -- "$reid" clip-encode --weights="$f/weights.pth" --images_npy="$e/q.npy" --output_dir="$tmp/enc"
hostile csv-list-fifo 30 2 "train.csv: not a regular file \(a FIFO\)" -- "$reid" dataset-stats --dataset=csv --data_root="$hx/csv_dataset"
hostile report-history-fifo 30 2 "history.jsonl: not a regular file \(a FIFO\)" -- "$reid" report --run_dir="$hx/run_fifo_history"
hostile report-html-is-dir 30 2 "report.html: exists and is not a regular file \(a directory\)" -- "$reid" report --run_dir="$hx/run_report_dir"

# --- 4. Configs that validated and then failed ------------------------------------------------
hostile config-lr-1e300 30 2 "stage2.base_lr = 1e\+300: must be in \(0, 10\] \(a learning rate\)" \
  -- "$reid" print-config --set='stage2 { base_lr: 1e300 }'
hostile config-lr-1e300-stage1 30 2 "stage1.base_lr = 1e\+300" -- "$reid" print-config --set='stage1 { base_lr: 1e300 }'

data=$tmp/data
"$reid" synth --output_dir="$data" --ids=18 --cameras=3 --images_per_id=6 --seed=3 --height=64 \
  --width=32 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
base=(--config=configs/synthetic_tiny.textproto --data_root="$data"
  --set='stage1 { max_epochs: 40 ims_per_batch: 24 log_period: 1 checkpoint_period: 1 }'
  --set='stage2 { max_epochs: 40 ids_per_batch: 6 ims_per_batch: 24 eval_period: 40 checkpoint_period: 1 log_period: 1 }'
  --set='data { num_workers: 1 max_unreadable_fraction: 0.05 }' --set='dist { intra_op_threads: 1 }')
hostile train-4096x4096 60 2 "the model at input.size_train 4096x4096 needs at least .* per rank, more than the .* of memory available on this node" \
  -- "$reid" train "${base[@]}" --output_dir="$tmp/huge" \
  --set='input { size_train { height: 4096 width: 4096 } size_test { height: 4096 width: 4096 } }'

# --- 1. Signals, on a dataset with a FIFO named like an image (an unreadable image, counted) ---
mkfifo "$data/bounding_box_train/0001_c1s1_000001_00.jpg"
start_until() {  # start_until OUT PATTERN [args...]: reid train in the background ($job), until PATTERN
  local out=$1 pattern=$2; shift 2
  "$reid" train "${base[@]}" --output_dir="$out" "$@" >"$out.log" 2>&1 &
  job=$!
  for _ in $(seq 1 1200); do
    grep -qE "$pattern" "$out.log" 2>/dev/null && return 0
    kill -0 $job 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
newest() { ls -d "$1"/checkpoints/s* 2>/dev/null | sort | tail -1; }

# SIGINT (Ctrl-C) in stage 1: a checkpoint, exit 75, the resume command. report.html is a
# directory: one warning line, the run still exits 75.
out=$tmp/sigint
mkdir -p "$out/report.html"
start_until "$out" "^stage 1 epoch 2/"
kill -INT $job; wait $job; rc=$?
check "sigint-stage1-exits-75-with-checkpoint" '[[ $rc -eq 75 ]] && grep -q "stopped by a signal after writing a checkpoint (exit status 75); resume with" "$out.log" && [[ -n $(newest "$out") ]]' "$out.log"
check "sigint-said-so" 'grep -q "SIGINT: stopping after the current step with a checkpoint" "$out.log"' "$out.log"
check "sigint-checkpoint-verifies" '"$reid" ckpt verify "$(newest "$out")" >/dev/null' "$out.log"
check "fifo-image-unreadable-counted" 'grep -q "unreadable image .*0001_c1s1_000001_00.jpg (.*not a regular file (a FIFO)" "$out.log"' "$out.log"
check "report-html-dir-one-warning" '[[ $(grep -c "report.html" "$out.log") -eq 1 ]] && grep -q "^warning: run report not written: .*report.html: exists and is not a regular file (a directory)" "$out.log"' "$out.log"

# SIGHUP (the terminal closed) in stage 2: the same as SIGTERM.
out=$tmp/sighup
start_until "$out" "^stage 2 epoch 1/" --set='stage1 { max_epochs: 2 }'
kill -HUP $job; wait $job; rc=$?
check "sighup-stage2-exits-75-with-checkpoint" '[[ $rc -eq 75 ]] && grep -q "stopped by a signal after writing a checkpoint" "$out.log" && [[ $(newest "$out") == */s2-* ]]' "$out.log"

# A second SIGINT within 5 s: exit 130 at once, saying so. The second is sent once the first has
# been handled (two signals sent at once may merge into one), during a stage-2 step made slow
# (about 3 s here: larger images, a deeper image encoder) so that the run is still going.
out=$tmp/sigint2
start_until "$out" "^stage 2 epoch 1/" --set='stage1 { max_epochs: 1 }' \
  --set='input { size_train { height: 128 width: 64 } size_test { height: 128 width: 64 } }' \
  --set='model { vision_layers: 6 vision_width: 256 }'
kill -INT $job
for _ in $(seq 1 200); do grep -q "SIGINT: stopping" "$out.log" && break; sleep 0.02; done
kill -INT $job
t=$SECONDS; wait $job; rc=$?
check "second-sigint-exits-130 ($((SECONDS - t)) s)" '[[ $rc -eq 130 ]] && grep -q "second SIGINT: exiting now without a checkpoint (status 130)" "$out.log"' "$out.log"

cli_finish
