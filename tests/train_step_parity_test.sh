#!/usr/bin/env bash
# Reference step parity: one stage-1 and one stage-2 step of `reid train` on the tiny model match
# tests/train_step_reference.py (Python PyTorch following CLIP-ReID's training code) from the same
# weights and batch, to 1e-5 relative per tensor. The dataset is one batch in each stage (8 ids x
# 4 images: stage 1 takes all 32 cached features, stage 2 is P x K = 8 x 4), augmentation off.
# The weights before the stage-1 step come from a stop requested during the feature extraction
# (REID_TEST_STOP_AT="1:-1:0", which checkpoints the untouched model); --resume=auto then runs
# both steps. A negative control: the reference with a perturbed stage-1 lr and ID-loss weight
# must fail in both stages.
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

data="$tmp/data" run="$tmp/run"
"$reid" synth --out="$data" --ids=8 --cameras=4 --images_per_id=4 --seed=7 --height=128 \
  --width=64 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
args=(--config=configs/synthetic_tiny.textproto
  --set='stage1 { max_epochs: 1 ims_per_batch: 64 }'
  --set='stage2 { max_epochs: 1 ids_per_batch: 8 num_instances: 4 ims_per_batch: 32 }'
  --set='input { flip_prob: 0 padding: 0 erasing_prob: 0 jpeg_dct_scaling: false }'
  --set='checkpoint { keep_last_n: 10 }' --set='data { num_workers: 1 }'
  --set='dist { intra_op_threads: 1 }')
"$reid" print-config "${args[@]}" >"$tmp/config.textproto" || { echo "FAIL print-config"; exit 1; }
REID_TEST_STOP_AT=1:-1:0 "$reid" train "${args[@]}" "${ours_only[@]}" --data_root="$data" \
  --output_dir="$run" >"$tmp/train.log" 2>&1
"$reid" train "${args[@]}" "${ours_only[@]}" --data_root="$data" --output_dir="$run" --resume=auto \
  >>"$tmp/train.log" 2>&1
expect "one-step-per-stage" 0 "^stage 2 epoch 1/1 step 1/1 " -- grep -E "^(stage|checkpoint)" "$tmp/train.log"
grep -q "^stage 1 epoch 1/1 step 1/1 " "$tmp/train.log" || { echo "FAIL stage-1-one-step"; fail=$((fail + 1)); }
ckpts=(--before="$run/checkpoints/s1-e0001-i000000" --after_stage1="$run/checkpoints/s1-e0002-i000000"
  --after_stage2="$run/checkpoints/s2-e0002-i000000")
for c in "${ckpts[@]}"; do
  [[ -d ${c#*=} ]] || { echo "FAIL no checkpoint ${c#*=}"; fail=$((fail + 1)); }
done
if [[ $fail -ne 0 ]]; then sed 's/^/  | /' "$tmp/train.log" | tail -20; cli_finish; exit; fi
grep -E "^stage [12] epoch" "$tmp/train.log" | sed 's/^/     ours: /'

reference() {  # reference CONFIG: the Python check against our checkpoints
  "$python" tests/train_step_reference.py check --config="$1" --data_root="$data" "${ckpts[@]}"
}
expect "parity-1e-5" 0 "^PASS" -- reference "$tmp/config.textproto"
sed 's/^/     /' "$tmp/out"

# Negative control: the reference with a 10% larger stage-1 lr and ID-loss weight fails each stage.
"$reid" print-config "${args[@]}" --set='stage1 { base_lr: 0.0011 }' --set='loss { id_weight: 0.275 }' \
  >"$tmp/perturbed.textproto"
expect "perturbed-reference-fails-stage-1" 1 "^stage 1: FAIL" -- reference "$tmp/perturbed.textproto"
cp "$tmp/out" "$tmp/perturbed.out"
expect "perturbed-reference-fails-stage-2" 0 "^stage 2: FAIL" -- cat "$tmp/perturbed.out"
cli_finish
