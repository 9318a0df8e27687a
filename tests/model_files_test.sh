#!/usr/bin/env bash
# `reid train` checks the files the config's model names before it reads a dataset: a missing
# weights or merges file is exit 2 naming the path and the fetch command, weights of another
# shape or a vocabulary of another size are exit 2 naming the fields, empty weights need
# model { random_init: true }, and --weights / --bpe_vocab replace the config's paths. Every
# refused run names a dataset folder that does not exist: the model's error must come first.
# Usage: model_files_test.sh PATH/TO/reid (run from the repository root).
set -u
reid=$(realpath "$1")
repo=$(pwd)
source "$(dirname "$0")/cli_lib.sh"
fixture=$repo/trainer/model/testdata/clip_fixtures/clip_state.pth  # tiny OpenAI-format CLIP
fetch='bash scripts/get_clip_weights.sh'
nodata=(--data_root="$tmp/no_dataset")
tiny=(--config="$repo/configs/synthetic_tiny.textproto")
# synthetic_tiny with the fixture's text shape (77 tokens, width 128), so that its weights fit.
fits=(--set='model { context_length: 77 transformer_width: 128 random_init: false }')

# The shipped configs' relative paths resolve against the working directory: from an empty one
# the weights are missing.
mkdir -p "$tmp/elsewhere"
expect missing-weights-relative 2 \
  "model.weights = 'pretrained/ViT-B-16.pt': no such file \(relative to the working directory $tmp/elsewhere\); $fetch" \
  -- env -C "$tmp/elsewhere" "$reid" train --config="$repo/configs/market1501_improved.textproto" \
  "${nodata[@]}" --output_dir="$tmp/run"
expect missing-weights-flag 2 "model.weights = '$tmp/none/ViT-B-16.pt': no such file; $fetch" -- \
  "$reid" train --config=configs/market1501_3090.textproto --weights="$tmp/none/ViT-B-16.pt" \
  "${nodata[@]}" --output_dir="$tmp/run"
expect missing-bpe-flag 2 "model.bpe_vocab = '$tmp/none.txt.gz': no such file; $fetch" -- \
  "$reid" train "${tiny[@]}" "${fits[@]}" --weights="$fixture" --bpe_vocab="$tmp/none.txt.gz" \
  "${nodata[@]}" --output_dir="$tmp/run"
expect weights-is-a-folder 2 "model.weights: .*not a regular file" -- \
  "$reid" train "${tiny[@]}" "${fits[@]}" --weights="$tmp" "${nodata[@]}" --output_dir="$tmp/run"
mkfifo "$tmp/fifo.txt.gz"
expect bpe-is-a-fifo 2 "model.bpe_vocab: .*fifo.txt.gz: not a regular file \(a FIFO\)" -- \
  timeout -s KILL 30 "$reid" train "${tiny[@]}" --bpe_vocab="$tmp/fifo.txt.gz" "${nodata[@]}" \
  --output_dir="$tmp/run"

# Weights of another shape than the config's model: each differing field named.
expect weights-other-shape 2 \
  "does not fit the config's model: the weights have context_length 77 \(config 24\), transformer_width 128 \(config 64\)" \
  -- "$reid" train "${tiny[@]}" --set='model { random_init: false }' --weights="$fixture" \
  "${nodata[@]}" --output_dir="$tmp/run"
# A vocabulary of another size than the text encoder's (3 merges: 517 ids, not 514).
printf '#version: 0.2\nt h\ni n\nth e</w>\n' >"$tmp/merges.txt"
expect vocab-other-size 2 \
  "model.bpe_vocab = '$tmp/merges.txt' gives 517 token ids but the text encoder of model.weights '.*clip_state.pth' has 514" \
  -- "$reid" train "${tiny[@]}" "${fits[@]}" --weights="$fixture" --bpe_vocab="$tmp/merges.txt" \
  "${nodata[@]}" --output_dir="$tmp/run"
expect vocab-byte-level-vs-clip 2 \
  "model.bpe_vocab is empty: the byte-level tokenizer gives 514 token ids but model.vocab_size is 49408" \
  -- "$reid" train --config=configs/market1501_3090.textproto --weights= --bpe_vocab= \
  --set='model { random_init: true }' "${nodata[@]}" --output_dir="$tmp/run"

# Random init only when the config says so.
expect random-init-refused 2 "model.weights is empty, which would train from random init: .*$fetch.*random_init: true" -- \
  "$reid" train "${tiny[@]}" --set='model { random_init: false }' "${nodata[@]}" --output_dir="$tmp/run"
expect random-init-with-weights 2 "model.random_init is true but model.weights = '.*clip_state.pth' names weights" -- \
  "$reid" train "${tiny[@]}" --weights="$fixture" "${nodata[@]}" --output_dir="$tmp/run"
[[ ! -e $tmp/run ]] || { echo "FAIL: a refused run created its output directory"; fail=$((fail + 1)); }

# Accepted: random init with the flag, and the fixture's weights (evaluation only, 8 identities).
small=(--set='data { synthetic { ids: 8 images_per_id: 4 } } stage1 { enabled: false }'
  --set='stage2 { enabled: false ids_per_batch: 4 ims_per_batch: 16 }')
expect random-init-accepted 0 '^done: mAP' -- \
  "$reid" train "${tiny[@]}" "${small[@]}" --output_dir="$tmp/random"
expect weights-accepted 0 '^done: mAP' -- \
  "$reid" train "${tiny[@]}" "${fits[@]}" "${small[@]}" --weights="$fixture" \
  --data_root="$tmp/random/data" --output_dir="$tmp/weights"
expect weights-recorded 0 "weights: \"$fixture\"" -- cat "$tmp/weights/config.textproto"

cli_finish
