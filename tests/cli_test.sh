#!/usr/bin/env bash
# End-to-end checks of the `reid` command line: print-config, exit status 2 on bad configs and
# flags, --help of every subcommand, version. Usage: cli_test.sh PATH/TO/reid (run from the root).
set -u
reid=$1
source "$(dirname "$0")/cli_lib.sh"

expect print-config-merged 0 '^  max_epochs: 3$' -- \
  "$reid" print-config --config=configs/market1501_improved.textproto --set='stage2 { max_epochs: 3 }'
expect print-config-template 0 'template: "\{ctx\} person."' -- \
  "$reid" print-config --config=configs/market1501_improved.textproto
expect print-config-two-sets 0 'n_ctx: 6' -- \
  "$reid" print-config --set='stage2 { max_epochs: 3 }' --set 'prompt { n_ctx: 6 }'
printf 'stage2 {\n  max_epoch: 3\n}\n' >"$tmp/unknown.textproto"
expect unknown-field 2 'unknown.textproto:2:.*max_epoch' -- "$reid" print-config --config="$tmp/unknown.textproto"
expect bad-value 2 'stage2.ims_per_batch = 48' -- \
  "$reid" print-config --set='stage2 { ims_per_batch: 48 }'
expect missing-file 2 'nope.textproto: cannot open' -- "$reid" print-config --config=nope.textproto
expect foreign-flag 2 'does not take --data_root' -- "$reid" version --data_root=x
expect foreign-set 2 'does not take --set' -- "$reid" version --set='stage2 { max_epochs: 3 }'
expect unknown-subcommand 2 "unknown subcommand 'trian'" -- "$reid" trian
expect no-subcommand 2 'usage: reid <subcommand>' -- "$reid"
expect help 0 'print-config' -- "$reid" --help
expect print-config-help 0 '\-\-config' -- "$reid" print-config --help
expect version-help 0 'usage: reid version' -- "$reid" version --help
expect version 0 'LibTorch: +[0-9]+\.[0-9]+' -- "$reid" version
expect version-blas 0 'BLAS: ' -- "$reid" version

# Old flag spellings (one release): renamed with a one-line warning naming the new flag.
expect synth-old-out 0 'warning: reid synth: --out is deprecated, use --output_dir' -- \
  "$reid" synth --out="$tmp/syn_old" --ids=2 --cameras=2 --images_per_id=2 --height=32 --width=16
expect synth-old-out-wrote 0 '^bounding_box_train$' -- ls "$tmp/syn_old"
touch "$tmp/a_file"
expect clip-encode-old-out-dir 2 "output_dir '.*a_file' exists and is not a directory" -- \
  "$reid" clip-encode --weights="$tmp/none.pth" --images_npy="$tmp/none.npy" --out_dir "$tmp/a_file"
expect synth-help-old 0 '--out  deprecated spelling of --output_dir' -- "$reid" synth --help
expect extract-no-out-dir 2 'does not take --output_dir' -- "$reid" extract --output_dir="$tmp/x"
# dist.backend is checked against the build and the device at start-up: NCCL never runs on the
# CPU (and needs a build with NCCL), so this is exit 2 naming the field, not an abort.
expect nccl-on-cpu 2 'dist.backend = NCCL' -- \
  "$reid" train --output_dir="$tmp/nccl" --device=cpu --set='dist { backend: NCCL }'

# Every subcommand's --help resolves each flag of the table (a typo there aborts).
for sub in $("$reid" --help | awk '/^  [a-z-]+ / {print $1}'); do
  expect "help-$sub" 0 "usage: reid $sub" -- "$reid" "$sub" --help
done

cli_finish
