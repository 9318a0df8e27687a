#!/usr/bin/env bash
# Reference step parity: one stage-1 and one stage-2 step of `reid train` on the tiny model match
# tests/train_step_reference.py (Python PyTorch following CLIP-ReID's training code) from the same
# weights and batch, to 1e-5 relative per tensor. The dataset is one batch in each stage (8 ids x
# 4 images: stage 1 takes all 32 cached features, stage 2 is P x K = 8 x 4), augmentation off.
# The weights before the stage-1 step come from a stop requested during the feature extraction
# (REID_TEST_STOP_AT="1:-1:0", which checkpoints the untouched model); --resume=auto then runs
# both steps. Twice: with Adam (the reference's optimiser) and with SGD (gradient magnitudes).
# A negative control: the reference with a perturbed stage-1 lr and ID-loss weight must fail in
# both stages.
# Usage: train_step_parity_test.sh PATH/TO/reid [extra `reid train` flags, ours only]
# (run from the repository root; extra flags such as --set='stage2 { base_lr: 0.0011 }' perturb
# our side only: the check must then fail). Exit 77 when /usr/bin/python3 has no torch.
set -u
reid=$1
shift
ours_only=("$@")
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1
python=/usr/bin/python3
if ! "$python" -c "import torch, PIL" 2>/dev/null; then
  echo "SKIP: $python lacks torch or PIL (Debian: apt-get install python3-torch python3-pil)"
  exit 77
fi

data="$tmp/data"
"$reid" synth --output_dir="$data" --ids=8 --cameras=4 --images_per_id=4 --seed=7 --height=128 \
  --width=64 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
base=(--config=configs/synthetic_tiny.textproto
  --set='stage1 { max_epochs: 1 ims_per_batch: 64 }'
  --set='stage2 { max_epochs: 1 ids_per_batch: 8 num_instances: 4 ims_per_batch: 32 }'
  --set='input { flip_prob: 0 padding: 0 erasing_prob: 0 jpeg_dct_scaling: false }'
  --set='checkpoint { keep_last_n: 10 }' --set='data { num_workers: 1 }'
  --set='dist { intra_op_threads: 1 }')

parity() {  # parity NAME [--set flags of both sides]: one step per stage, ours vs the reference
  local name=$1 run="$tmp/$1"; shift
  local args=("${base[@]}" "$@")
  if ! "$reid" print-config "${args[@]}" >"$tmp/$name.textproto"; then
    echo "FAIL $name print-config"; fail=$((fail + 1)); return
  fi
  REID_TEST_STOP_AT=1:-1:0 "$reid" train "${args[@]}" "${ours_only[@]}" --data_root="$data" \
    --output_dir="$run" >"$run.log" 2>&1
  "$reid" train "${args[@]}" "${ours_only[@]}" --data_root="$data" --output_dir="$run" \
    --resume=auto >>"$run.log" 2>&1
  use_checkpoints "$run"
  if ! grep -q "^stage 1 epoch 1/1 step 1/1 " "$run.log" ||
    ! grep -q "^stage 2 epoch 1/1 step 1/1 " "$run.log" ||
    ! [[ -d $run/checkpoints/s1-e0001-i000000 && -d $run/checkpoints/s2-e0002-i000000 ]]; then
    echo "FAIL $name: not one step per stage with the three checkpoints"
    sed 's/^/  | /' "$run.log" | tail -20
    fail=$((fail + 1)); return
  fi
  grep -E "^stage [12] epoch" "$run.log" | sed 's/^/     ours: /'
  expect "$name-parity" 0 "^PASS" -- reference "$tmp/$name.textproto"
  sed 's/^/     /' "$tmp/out"
}
use_checkpoints() {  # use_checkpoints RUN: before, after stage 1 and after stage 2 of that run
  ckpts=(--before="$1/checkpoints/s1-e0001-i000000" --after_stage1="$1/checkpoints/s1-e0002-i000000"
    --after_stage2="$1/checkpoints/s2-e0002-i000000")
}
reference() {  # reference CONFIG: the Python check against the checkpoints in ${ckpts[@]}
  "$python" tests/train_step_reference.py check --config="$1" --data_root="$data" "${ckpts[@]}"
}

# The reference's optimiser (Adam); its first step is about lr x sign(gradient), so SGD (lr large
# enough that a step is of the parameters' size) checks the gradients' magnitudes too.
parity adam
parity sgd --set='stage1 { optimizer: SGD base_lr: 1.0 }' \
  --set='stage2 { optimizer: SGD base_lr: 0.1 }'

# Negative control: the reference with a 10% larger stage-1 lr and ID-loss weight fails each stage.
"$reid" print-config "${base[@]}" --set='stage1 { base_lr: 0.0011 }' \
  --set='loss { id_weight: 0.275 }' >"$tmp/perturbed.textproto"
use_checkpoints "$tmp/adam"
expect "perturbed-ref-fails-stage-1" 1 "^stage 1: FAIL" -- reference "$tmp/perturbed.textproto"
cp "$tmp/out" "$tmp/perturbed.out"
expect "perturbed-ref-fails-stage-2" 0 "^stage 2: FAIL" -- cat "$tmp/perturbed.out"
cli_finish
