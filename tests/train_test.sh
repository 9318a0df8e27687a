#!/usr/bin/env bash
# End-to-end `reid train` on a small synthetic dataset: 1 rank == 2 == 3 ranks (GLOBAL scope),
# LOCAL scope differs, resume is bit-identical (stop in stage 1, in stage 2, and through SIGTERM
# on one rank), step-period checkpoints change nothing and resume exactly, a damaged checkpoint
# is detected and skipped, a failed checkpoint write leaves the
# previous one usable, bad input exits 2 with one clear line, a killed rank ends the job.
# Usage: train_test.sh PATH/TO/reid MPIEXEC   (run from the repository root)
set -u
reid=$1 mpiexec=$2
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1

# A small run of the tiny config: 18 ids, P = 6 (divisible by 1, 2, 3 ranks), 2 + 2 epochs.
data="$tmp/data"
"$reid" synth --output_dir="$data" --ids=18 --cameras=3 --images_per_id=6 --seed=3 --height=64 \
  --width=32 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
base=(--config=configs/synthetic_tiny.textproto --data_root="$data"
  --set='stage1 { max_epochs: 2 ims_per_batch: 24 log_period: 1 checkpoint_period: 1 }'
  --set='stage2 { max_epochs: 2 ids_per_batch: 6 ims_per_batch: 24 eval_period: 1 checkpoint_period: 1 log_period: 1 }'
  --set='data { num_workers: 1 }' --set='dist { intra_op_threads: 1 timeout_s: 60 }')

train() {  # train NP OUT [extra args...]: runs under mpirun when NP > 1
  local np=$1 out=$2; shift 2
  if [[ $np -eq 1 ]]; then
    "$reid" train "${base[@]}" --output_dir="$out" "$@" >"$out.log" 2>&1
  else
    "$mpiexec" -np "$np" "$reid" train "${base[@]}" --output_dir="$out" "$@" >"$out.log" 2>&1
  fi
}

final() { ls -d "$1"/checkpoints/s2-* 2>/dev/null | sort | tail -1; }
rel_diff() { "$reid" ckpt diff "$1" "$2" | tail -1 | sed 's/.*max_rel_diff=//'; }
check() {  # check NAME CONDITION [log]
  if eval "$2"; then echo "ok   $1"; else
    echo "FAIL $1"; [[ -n ${3:-} ]] && tail -20 "$3" | sed 's/^/  | /'; fail=$((fail + 1)); fi
}
start_until_stage2() {  # starts a 2-rank run in the background (pid in $job), returns in stage 2
  local out=$1; shift
  train 2 "$out" "$@" &
  job=$!
  for _ in $(seq 1 600); do
    grep -q "^stage 2 epoch" "$out.log" 2>/dev/null && break; sleep 0.1
  done
}
below() { awk -v x="$1" -v t="$2" 'BEGIN { exit !(x + 0 < t + 0) }'; }

train 1 "$tmp/r1"; check "train-1-rank" '[[ $? -eq 0 ]]' "$tmp/r1.log"
check "metrics-json" 'grep -q "\"mAP\":" "$tmp/r1/metrics.json" && grep -q "\"epoch\":2" "$tmp/r1/metrics.json"' "$tmp/r1.log"
check "progress-line" 'grep -Eq "^stage 2 epoch 2/2 step [0-9]+/[0-9]+ \| loss [0-9.]+ \(id .* tri .* i2t .*\) \| lr .* img/s" "$tmp/r1.log"' "$tmp/r1.log"
check "config-written" '[[ -s $tmp/r1/config.textproto && -s $tmp/r1/logs/rank0.log ]]'
# Parameter equality is checked with SGD in stage 2: Adam turns the float-rounding noise of
# gradients that are exactly zero in theory (the key bias of every attention layer) into full
# lr-sized steps of random sign, so its parameters differ by ~lr there whatever the ranks do.
sgd=(--set='stage2 { optimizer: SGD base_lr: 0.01 }')
train 1 "$tmp/s1" "${sgd[@]}"; check "train-1-rank-sgd" '[[ $? -eq 0 ]]' "$tmp/s1.log"
train 2 "$tmp/r2"; check "train-2-ranks-adam" '[[ $? -eq 0 ]]' "$tmp/r2.log"
for np in 2 3; do
  train $np "$tmp/s$np" "${sgd[@]}"; check "train-$np-ranks" '[[ $? -eq 0 ]]' "$tmp/s$np.log"
  d=$(rel_diff "$(final "$tmp/s1")" "$(final "$tmp/s$np")")
  echo "     1 rank vs $np ranks: max_rel_diff=$d"
  check "ranks-1-vs-$np-same-parameters" 'below "$d" 1e-4'
done
train 2 "$tmp/local" "${sgd[@]}" --set='dist { loss_scope: LOCAL }'
check "train-local-scope" '[[ $? -eq 0 ]]' "$tmp/local.log"
d=$(rel_diff "$(final "$tmp/s1")" "$(final "$tmp/local")")
echo "     1 rank vs 2 ranks LOCAL: max_rel_diff=$d"
check "local-scope-differs" '! below "$d" 1e-4'

# fp16's dynamic loss scaling, run on CPU through the test hook REID_TEST_LOSS_SCALE (the scaler
# with that initial scale, in fp32). A power-of-two scale is exact: the same parameters as the
# unscaled run, bit for bit. A scale that overflows makes every rank skip the same steps and back
# off; stopping and resuming such a run restores the scaler (scaler.pt) exactly.
REID_TEST_LOSS_SCALE=65536 train 2 "$tmp/scaled"; rc=$?
line=$("$reid" ckpt diff "$(final "$tmp/r2")" "$(final "$tmp/scaled")" | tail -1)
echo "     loss scale 65536 vs none: $line"
check "loss-scaling-exact" '[[ $rc -eq 0 && $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]' "$tmp/scaled.log"
REID_TEST_LOSS_SCALE=8e36 train 2 "$tmp/overflow"; rc=$?
n=$(grep -c "gradient overflow: step skipped" "$tmp/overflow/logs/rank1.log")
echo "     loss scale 8e36: $n steps skipped on rank 1"
check "loss-scaling-overflow-skips" '[[ $rc -eq 0 && $n -gt 0 && -s $(final "$tmp/overflow")/scaler.pt ]]' "$tmp/overflow.log"
check "loss-scaling-same-skips-on-every-rank" '[[ $(grep -c "gradient overflow" "$tmp/overflow/logs/rank0.log") -eq $n ]]'
REID_TEST_LOSS_SCALE=8e36 REID_TEST_STOP_AT=1:1:2 train 2 "$tmp/overflow_stop"
REID_TEST_LOSS_SCALE=8e36 train 2 "$tmp/overflow_stop" --resume=auto; rc=$?
line=$("$reid" ckpt diff "$(final "$tmp/overflow")" "$(final "$tmp/overflow_stop")" | tail -1)
echo "     overflowing run stopped at 1:1:2 + resume vs uninterrupted: $line"
check "loss-scaler-resume-bit-identical" '[[ $rc -eq 0 && $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]' "$tmp/overflow_stop.log"

# Resume: a stop requested (as by a signal) on the last rank, then --resume=auto.
for at in 1:2:1 2:1:2; do
  out="$tmp/stop_$at"
  REID_TEST_STOP_AT=$at train 2 "$out"; rc=$?
  check "stop-at-$at-exits-75" '[[ $rc -eq 75 ]] && grep -q "resume with" "$out.log"' "$out.log"
  train 2 "$out" --resume=auto; rc=$?
  check "resume-from-$at" '[[ $rc -eq 0 ]] && grep -q "resuming from" "$out.log"' "$out.log"
  line=$("$reid" ckpt diff "$(final "$tmp/r2")" "$(final "$out")" | tail -1)
  echo "     stop at $at + resume vs uninterrupted: $line"
  check "resume-$at-bit-identical" '[[ $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]'
done

# SIGTERM to one rank during stage 2: every rank checkpoints at the same step and exits 75.
out="$tmp/sigterm"
start_until_stage2 "$out" --set='stage2 { max_epochs: 4 }'
pkill -TERM -f -n "reid train.*--output_dir=$out"
wait $job; rc=$?
check "sigterm-exits-75-with-checkpoint" '[[ $rc -eq 75 ]] && grep -q "resume with" "$out.log"' "$out.log"
train 2 "$out" --set='stage2 { max_epochs: 4 }' --resume=auto; rc=$?
check "sigterm-resume" '[[ $rc -eq 0 ]]' "$out.log"
train 2 "$tmp/r2_long" --set='stage2 { max_epochs: 4 }'
line=$("$reid" ckpt diff "$(final "$tmp/r2_long")" "$(final "$out")" | tail -1)
echo "     SIGTERM + resume vs uninterrupted: $line"
check "sigterm-resume-bit-identical" '[[ $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]'

# checkpoint.period_steps: a checkpoint every 2 optimiser steps besides the epochs' (mid-epoch
# positions included); checkpoints do not change training, and a resume from a mid-epoch one is
# exact.
train 1 "$tmp/steps" --set='checkpoint { period_steps: 2 keep_last_n: 100 }'; rc=$?
mid=$(ls -d "$tmp/steps"/checkpoints/s[12]-e*-i* 2>/dev/null | grep -v -- '-i000000$' | wc -l)
echo "     period_steps 2: $mid mid-epoch checkpoints"
check "period-steps-checkpoints" '[[ $rc -eq 0 && $mid -ge 3 ]]' "$tmp/steps.log"
line=$("$reid" ckpt diff "$(final "$tmp/r1")" "$(final "$tmp/steps")" | tail -1)
check "period-steps-same-training" '[[ $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]'
resume_from=$(ls -d "$tmp/steps"/checkpoints/s2-e*-i* | grep -v -- '-i000000$' | sort | head -1)
mkdir -p "$tmp/steps_resume/checkpoints"
cp -r "$resume_from" "$tmp/steps_resume/checkpoints/"
train 1 "$tmp/steps_resume" --resume=auto; rc=$?
line=$("$reid" ckpt diff "$(final "$tmp/r1")" "$(final "$tmp/steps_resume")" | tail -1)
echo "     resume from $(basename "$resume_from") vs uninterrupted: $line"
check "period-steps-resume-bit-identical" '[[ $rc -eq 0 && $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]' "$tmp/steps_resume.log"

# Damaged checkpoints: verify fails naming the file; --resume=auto skips it with a warning.
cp -r "$tmp/r1" "$tmp/damaged"
newest=$(final "$tmp/damaged")
printf '\x01' | dd of="$newest/model.pt" bs=1 seek=100 conv=notrunc status=none
expect ckpt-verify-detects 1 'FAILED .*model.pt: CRC-32 mismatch' -- "$reid" ckpt verify "$newest"
expect ckpt-verify-good 0 '^OK ' -- "$reid" ckpt verify "$(final "$tmp/r1")"
expect ckpt-show 0 'stage: 2' -- "$reid" ckpt show "$tmp/r1"
truncate -s 50 "$(ls -d "$tmp/damaged"/checkpoints/s2-* | sort | tail -2 | head -1)/model.pt"
expect resume-auto-skips-damaged 0 'skipping damaged checkpoint.*(model.pt)' -- \
  "$reid" train "${base[@]}" --output_dir="$tmp/damaged" --resume=auto

# A failed checkpoint write (injected) is reported and leaves the previous checkpoint usable.
REID_FAULT_CHECKPOINT_WRITE=3 train 1 "$tmp/wfail"; rc=$?
check "failed-write-reported" 'grep -q "injected write failure" "$tmp/wfail.log"' "$tmp/wfail.log"
check "failed-write-previous-usable" '"$reid" ckpt verify "$(final "$tmp/wfail")" >/dev/null'

# Bad input: exit 2, one clear line, nothing overwritten.
expect bad-start-stage 2 'start_stage=3: must be 1 or 2' -- "$reid" train "${base[@]}" --output_dir="$tmp/x" --start_stage=3
expect resume-not-a-checkpoint 2 'resume.*not a checkpoint|no such checkpoint' -- \
  "$reid" train "${base[@]}" --output_dir="$tmp/x" --resume="$tmp/data"
expect resume-other-shape 2 'differs from the checkpoint.*model.embed_dim' -- \
  "$reid" train "${base[@]}" --set='model { embed_dim: 32 }' --output_dir="$tmp/x" --resume="$tmp/r1"
touch "$tmp/afile"
expect output-dir-is-a-file 2 'afile: exists and is not a directory' -- \
  "$reid" train "${base[@]}" --output_dir="$tmp/afile"
before=$(find "$tmp/r1/checkpoints" -type f -exec md5sum {} + | sort | md5sum)
expect resume-other-shape-keeps 2 'differs' -- "$reid" train "${base[@]}" \
  --set='model { vision_layers: 3 }' --output_dir="$tmp/r1" --resume=auto
after=$(find "$tmp/r1/checkpoints" -type f -exec md5sum {} + | sort | md5sum)
check "nothing-overwritten" '[[ $before == "$after" ]]'

# SIE with camera ids that have gaps (a CSV dataset using cameras 0 and 7 only): the embedding is
# sized by the largest id, so training and evaluation index it in range.
mkdir -p "$tmp/csv"
ln -s "$(realpath "$data")" "$tmp/csv/img"  # list paths stay inside the dataset folder
for split in train:bounding_box_train query:query gallery:bounding_box_test; do
  echo "path,pid,camid" >"$tmp/csv/${split%%:*}.csv"
  for f in "$data/${split#*:}"/*.jpg; do
    b=$(basename "$f")
    [[ $b == -* ]] && continue  # junk (pid -1)
    pid=$((10#${b%%_*})); cam=$(( ${b:6:1} == 1 ? 0 : 7 ))
    echo "img/${split#*:}/$b,$pid,$cam" >>"$tmp/csv/${split%%:*}.csv"
  done
done
expect sie-gapped-cameras 0 '^done: mAP' -- "$reid" train "${base[@]}" --data_root="$tmp/csv" \
  --output_dir="$tmp/sie" --set='data { dataset: CSV } model { sie_camera: true }' \
  --set='stage1 { max_epochs: 1 } stage2 { max_epochs: 1 }'

# A rank killed mid-training ends the job with a non-zero status within 30 s.
out="$tmp/killed"
start_until_stage2 "$out" --set='stage2 { max_epochs: 20 }'
start=$(date +%s)
pkill -KILL -f -n "reid train.*--output_dir=$out"
wait $job; rc=$?
secs=$(( $(date +%s) - start ))
echo "     killed rank: job ended with status $rc after $secs s"
check "killed-rank-ends-job" '[[ $rc -ne 0 && $secs -lt 30 ]]' "$out.log"

cli_finish
