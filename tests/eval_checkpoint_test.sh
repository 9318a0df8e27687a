#!/usr/bin/env bash
# `reid eval --checkpoint` and `reid extract` on a tiny trained model: eval reproduces the
# training's final metrics.json; extract's files evaluated in feature-file mode give the same
# result; extraction on 2 ranks writes the same rows and features (to float rounding);
# flip-averaged features differ from the plain ones; a --set that changes the model and a missing
# checkpoint exit 2 with one clear line.
# Usage: eval_checkpoint_test.sh PATH/TO/reid MPIEXEC   (run from the repository root)
set -u
reid=$1 mpiexec=$2
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1
if ! /usr/bin/python3 -c 'import json, numpy' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 with numpy is missing (it compares the results)"; exit 77
fi

data="$tmp/data"
"$reid" synth --output_dir="$data" --ids=12 --cameras=3 --images_per_id=6 --seed=5 --height=64 \
  --width=32 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
cfg=(--config=configs/synthetic_tiny.textproto --data_root="$data"
  --set='data { num_workers: 1 }' --set='dist { intra_op_threads: 1 timeout_s: 60 }')
"$reid" train "${cfg[@]}" --output_dir="$tmp/run" \
  --set='stage1 { max_epochs: 1 ims_per_batch: 24 checkpoint_period: 1 }' \
  --set='stage2 { max_epochs: 1 ids_per_batch: 6 ims_per_batch: 24 eval_period: 1 checkpoint_period: 1 }' \
  >"$tmp/train.log" 2>&1 || { echo "FAIL: reid train"; tail "$tmp/train.log"; exit 1; }

expect "eval-checkpoint" 0 "^eval \| mAP" -- "$reid" eval "${cfg[@]}" --checkpoint="$tmp/run" \
  --out_json="$tmp/ckpt.json"
expect "eval-matches-training-metrics" 0 "^same" -- /usr/bin/python3 -c "
import json
a, b = json.load(open('$tmp/ckpt.json')), json.load(open('$tmp/run/metrics.json'))
assert a['mAP'] == b['mAP'] and a['cmc'] == b['cmc'], (a, b)
print('same')"
for split in query gallery; do
  expect "extract-$split" 0 "wrote .*$split.npy" -- "$reid" extract "${cfg[@]}" \
    --checkpoint="$tmp/run" --split=$split --out="$tmp/$split"
done
expect "extract-then-eval" 0 "^eval \| mAP" -- "$reid" eval --query_features="$tmp/query.npy" \
  --gallery_features="$tmp/gallery.npy" --query_meta="$tmp/query.csv" \
  --gallery_meta="$tmp/gallery.csv" --out_json="$tmp/files.json"
expect "extract-eval-same-result" 0 "^identical" -- bash -c \
  "cmp $tmp/files.json $tmp/ckpt.json && echo identical"
"$mpiexec" -np 2 "$reid" extract "${cfg[@]}" --checkpoint="$tmp/run" --split=gallery \
  --out="$tmp/gallery2" >"$tmp/mpi.log" 2>&1
# Each rank extracts its shard in its own batches: the same rows and files, features equal to
# float rounding (a batch's BLAS blocking depends on its size).
expect "extract-2-ranks-same" 0 "^same" -- /usr/bin/python3 -c "
import numpy as np
a, b = np.load('$tmp/gallery.npy'), np.load('$tmp/gallery2.npy')
assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), np.abs(a - b).max()
assert open('$tmp/gallery.csv').read() == open('$tmp/gallery2.csv').read()
print('same', a.shape, np.abs(a - b).max())"
for flip in true false; do  # the tiny config turns it on; both settings explicit here
  "$reid" extract "${cfg[@]}" --set="eval { flip_feature: $flip }" --checkpoint="$tmp/run" \
    --split=gallery --out="$tmp/flip_$flip" >/dev/null 2>&1
done
expect "flip-feature-differs" 0 "^differs" -- bash -c \
  "cmp -s $tmp/flip_false.npy $tmp/flip_true.npy || echo differs"
expect "grid-of-real-images" 0 "retrieval grid: .*grid.jpg \(2 queries\)$" -- "$reid" eval \
  "${cfg[@]}" --checkpoint="$tmp/run" --visualize=2 --visualize_out="$tmp/grid.jpg"
# The checkpoint's own config gives the model: a --set that changes it is refused.
expect "set-cannot-change-the-model" 2 "--set changes model" -- "$reid" eval "${cfg[@]}" \
  --set='model { vision_layers: 3 }' --checkpoint="$tmp/run"
expect "missing-checkpoint" 2 "--checkpoint" -- "$reid" eval "${cfg[@]}" --checkpoint="$tmp/nothing"
expect "both-modes" 2 "either --checkpoint" -- "$reid" eval "${cfg[@]}" --checkpoint="$tmp/run" \
  --query_features=x.npy
cli_finish
