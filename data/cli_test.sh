#!/usr/bin/env bash
# Command-line checks of `reid synth` and `reid dataset-stats`: the round trip, the JSON object,
# exit status 2 with the path named on bad input. Usage: cli_test.sh PATH/TO/reid (from the root).
set -u
reid=$1
source "$(dirname "$0")/../tests/cli_lib.sh"

expect synth 0 'wrote 252 JPEGs' -- \
  "$reid" synth --output_dir="$tmp/syn" --ids=20 --cameras=3 --images_per_id=6 --seed=3
expect stats-json 0 '^\{"train":\{"ids":20,"images":120,"cameras":3\},"query":\{"ids":20,"images":20,"cameras":3\},"gallery":\{"ids":21,"images":110,"cameras":3\}\}$' -- \
  "$reid" dataset-stats --dataset=market1501 --data_root="$tmp/syn" --json
expect stats-table 0 'train    \|    20 \|      120 \|         3' -- \
  "$reid" dataset-stats --dataset=synthetic --data_root="$tmp/syn"
mkdir -p "$tmp/parent/Market-1501-v15.09.15" && mv "$tmp/syn"/* "$tmp/parent/Market-1501-v15.09.15/"
expect stats-parent 0 '"gallery":\{"ids":21' -- \
  "$reid" dataset-stats --dataset=market1501 --data_root="$tmp/parent" --json
expect stats-missing 2 "$tmp/nope: missing folder" -- \
  "$reid" dataset-stats --dataset=market1501 --data_root="$tmp/nope"
expect stats-bad-kind 2 "--dataset = 'cuhk03'" -- \
  "$reid" dataset-stats --dataset=cuhk03 --data_root="$tmp"
mkdir -p "$tmp/MSMT17/train" "$tmp/MSMT17/test"
printf '0000/0000_000_01_0303morning_0015_0.jpg\n' >"$tmp/MSMT17/list_train.txt"
expect stats-bad-line 2 'list_train.txt:1: expected' -- \
  "$reid" dataset-stats --dataset=msmt17 --data_root="$tmp"
# One validator: the config block and the synth shortcuts give the same message.
msg='data.synthetic.cameras = 12: must be in 2..9'
expect synth-config-bad 2 "$msg" -- "$reid" print-config --set='data { synthetic { height: 20 cameras: 12 } }'
expect synth-flags-bad 2 "$msg" -- "$reid" synth --output_dir="$tmp/x" --height=20 --cameras=12
expect synth-flags-height 2 'data.synthetic.height = 20' -- "$reid" synth --output_dir="$tmp/x" --height=20
expect synth-bad-cameras 2 'data.synthetic.cameras = 12: must be in 2..9' -- "$reid" synth --output_dir="$tmp/x" --cameras=12
expect synth-no-out 2 '--output_dir is required' -- "$reid" synth

cli_finish
