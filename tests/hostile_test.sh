#!/usr/bin/env bash
# Regression tests of issue 12 (hostile inputs): every crafted file or value below must make
# `reid` exit 2 within the time limit, with short output naming the file (or flag) and the fault;
# no crash, abort, hang or exit 1. Files come from tests/hostile/make_hostile.py.
# Usage: hostile_test.sh PATH/TO/reid (run from the repository root).
set -u
reid=$1
py=/usr/bin/python3
source "$(dirname "$0")/cli_lib.sh"
if ! $py -c 'import torch, numpy' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 with torch and numpy is missing"; exit 77
fi
hx=$tmp/hx
$py tests/clip_reference.py fixtures "$tmp/fx" || { echo "FAIL: fixture script"; exit 1; }
$py tests/hostile/make_hostile.py "$hx" "$tmp/fx" || { echo "FAIL: make_hostile.py"; exit 1; }

# hostile NAME SECONDS PATTERN -- command...: exit 2 within SECONDS (30 for most: a bound that
# holds on a loaded 2-core machine, where the regressions took minutes or never finished), at most 6 lines (a config's
# problems are listed one per line) and 1,000 bytes of output, matching PATTERN (an extended
# regular expression). Standard input is $stdin (default /dev/null).
hostile() {
  local name=$1 limit=$2 pattern=$3; shift 4
  local start=$SECONDS
  timeout -s KILL "$limit" "$@" >"$tmp/out" 2>&1 <"${stdin:-/dev/null}"
  local got=$? took=$((SECONDS - start)) lines bytes
  lines=$(wc -l <"$tmp/out"); bytes=$(wc -c <"$tmp/out")
  if [[ $got -ne 2 ]] || ! grep -qE -- "$pattern" "$tmp/out" || ((lines > 6 || bytes > 1000)); then
    echo "FAIL $name: status $got (want 2) after ${took}s, $lines lines, pattern '$pattern'"
    head -c 600 "$tmp/out" | sed 's/^/  | /'
    fail=$((fail + 1))
  else
    echo "ok   $name (${took}s)"
  fi
}

# clip-encode of the fixture images; append --weights=FILE.
encode=("$reid" clip-encode --images_npy="$tmp/fx/images.npy" --output_dir="$tmp/enc")

# 1. Tensor views outside their storage (SIGSEGV / silent heap copy before).
for f in oob_offset_segv oob_offset_heap oob_size oob_stride overflow_stride negative_size \
    zero_stride_huge; do
  hostile "pth-$f" 30 "$f.pth.*(outside its storage|reads element|negative size|times the bytes)" \
    -- "${encode[@]}" --weights="$hx/$f.pth"
done
# 2. Deep nesting and element counts (stack overflow before), malformed pickles.
for f in deep_lists deep_tuples deep_dicts; do
  hostile "pth-$f" 30 "$f.pth.*nests deeper than 256" -- "${encode[@]}" --weights="$hx/$f.pth"
done
hostile pth-five-million-items 30 "five_million_items.pth.*more than 4194304 objects" -- \
  "${encode[@]}" --weights="$hx/five_million_items.pth"
hostile pth-huge-string 30 "huge_string.pth.*truncated pickle" -- "${encode[@]}" --weights="$hx/huge_string.pth"
hostile pth-memo-missing 30 "memo_missing.pth.*memo key 7" -- "${encode[@]}" --weights="$hx/memo_missing.pth"
hostile pth-long1-wide 30 "long1_wide.pth.*wider than 64 bits" -- "${encode[@]}" --weights="$hx/long1_wide.pth"

# 3. Images smaller than the patch (a CHECK abort before), and a patch larger than the images.
for hw in 32x4 4x32 0x0; do
  hostile "images-$hw" 30 "images_$hw.npy: images $hw.* smaller than the patch 8" -- \
    "$reid" clip-encode --weights="$tmp/fx/clip_state.pth" --images_npy="$hx/images_$hw.npy" \
    --output_dir="$tmp/enc"
done
hostile patch-larger-than-images 30 "images 32x32 are smaller than the patch 40" -- \
  "${encode[@]}" --weights="$hx/patch_40.pth"

# 5. Malformed tensors in a checkpoint reach our shape check, not LibTorch's messages.
for f in conv_0d conv_kernel_0x0 ln_final_empty; do
  hostile "ckpt-$f" 30 "$f.pth.*cannot infer the CLIP shape" -- "${encode[@]}" --weights="$hx/$f.pth"
done
hostile ckpt-width-huge 30 "width_huge.pth.*describe transformers of" -- \
  "${encode[@]}" --weights="$hx/width_huge.pth"
# Mutated TorchScript archives: exit 0 (a harmless mutation) or 2, never anything else. m27, m32
# and m36 crash LibTorch's loader (SIGSEGV); the others throw various exceptions or load.
bad=0
for f in "$hx"/jit_mutants/m2[5-9].pt "$hx"/jit_mutants/m3[0-7].pt; do
  timeout -s KILL 30 "${encode[@]}" --weights="$f" >"$tmp/out" 2>&1
  rc=$?
  if [[ $rc -ne 0 && $rc -ne 2 ]] || { [[ $rc -eq 2 ]] && ! grep -q "$(basename "$f")" "$tmp/out"; }
  then
    echo "  $(basename "$f"): status $rc: $(head -c 200 "$tmp/out")"; bad=$((bad + 1))
  fi
done
if ((bad == 0)); then echo "ok   jit-mutants"; else echo "FAIL jit-mutants: $bad"; fail=$((fail + 1)); fi
REID_TORCHSCRIPT=0 hostile torchscript-opt-out 30 "clip_jit.pt' is a TorchScript archive and REID_TORCHSCRIPT=0" \
  -- "${encode[@]}" --weights="$tmp/fx/clip_jit.pt"
hostile image-size-huge 30 "image_size = '100000x100000'" -- \
  "${encode[@]}" --weights="$tmp/fx/clip_state.pth" --image_size=100000x100000
hostile image-size-overflow 30 "image_size = '99999999999999999999x8'" -- \
  "${encode[@]}" --weights="$tmp/fx/clip_state.pth" --image_size=99999999999999999999x8
touch "$tmp/a_file"
hostile out-dir-is-file 30 "output_dir '.*a_file' exists and is not a directory" -- \
  "$reid" clip-encode --weights="$tmp/fx/clip_state.pth" --images_npy="$tmp/fx/images.npy" \
  --output_dir="$tmp/a_file"
hostile out-dir-no-parent 30 "output_dir '.*no/such/dir'.*parent folder" -- \
  "$reid" clip-encode --weights="$tmp/fx/clip_state.pth" --images_npy="$tmp/fx/images.npy" \
  --output_dir="$tmp/no/such/dir"
hostile weights-is-dir 30 "weights file '.*' .*not a readable regular file" -- \
  "${encode[@]}" --weights="$tmp"

# 6 and 8. .npy headers: sizes checked against the file before allocating, strict shapes.
npy() {  # npy NAME PATTERN: clip-encode with --images_npy=$hx/NAME.npy
  hostile "$1" 30 "$1.npy'?: .*$2" -- "$reid" clip-encode --weights="$tmp/fx/clip_state.pth" \
    --images_npy="$hx/$1.npy" --output_dir="$tmp/enc"
}
npy npy_header_4gb "header of 4294967280 bytes"
npy npy_negative "bad shape \(-1, 3\)"
npy npy_absurd "needs 40000000000000000000*00 bytes of data but the file holds 0|bad shape"
npy npy_overflow "bad shape"
npy npy_overflow_product "bad shape"
npy npy_shape_junk "bad shape \(1,3,3a2,32\)"
npy npy_truncated "needs 12288 bytes of data but the file holds 100"
npy npy_no_shape "bad shape"
hostile npy-is-dir 30 "$tmp/fx'?: not a regular file" -- "$reid" clip-encode \
  --weights="$tmp/fx/clip_state.pth" --images_npy="$tmp/fx" --output_dir="$tmp/enc"

# 4. Tokenizer: linear time on a 1 MB line and a 1 MB word (45 s and > 60 s before).
merges=../shared/clip/bpe_simple_vocab_16e6.txt.gz
vocabs=("")
[[ -f $merges ]] && vocabs+=("$merges")
for v in "${vocabs[@]}"; do
  tag=${v:+merges}; tag=${tag:-bytes}
  for f in line_1mb word_1mb; do
    stdin=$hx/$f.txt hostile "tokenize-$f-$tag" 30 \
      "stdin line 1: text has more than context length 77 tokens" -- "$reid" tokenize --bpe_vocab="$v"
    start=$SECONDS
    if timeout -s KILL 30 "$reid" tokenize --bpe_vocab="$v" --truncate <"$hx/$f.txt" >"$tmp/ids" &&
       [[ $(wc -w <"$tmp/ids") -eq 77 ]]; then
      echo "ok   tokenize-truncate-$f-$tag ($((SECONDS - start))s)"
    else
      echo "FAIL tokenize-truncate-$f-$tag"; fail=$((fail + 1))
    fi
    start=$SECONDS
    if timeout -s KILL 40 "$reid" tokenize --bpe_vocab="$v" --context_length=2000000 \
        <"$hx/$f.txt" >/dev/null; then
      echo "ok   tokenize-whole-$f-$tag ($((SECONDS - start))s)"
    else
      echo "FAIL tokenize-whole-$f-$tag"; fail=$((fail + 1))
    fi
  done
done

# 8. A truncated merges file is an error, not a silently smaller vocabulary.
if [[ -f $merges ]]; then
  head -c 300000 "$merges" >"$tmp/truncated.txt.gz"
  hostile merges-truncated 30 "truncated.txt.gz': .*truncated or corrupt gzip" -- \
    "$reid" tokenize --bpe_vocab="$tmp/truncated.txt.gz"
fi

# 5. Bad flag values are exit 2 (gflags exits 1 by itself); positional arguments are rejected.
hostile flag-int 30 "ids = 'abc': not a valid int32" -- "$reid" synth --output_dir="$tmp/s" --ids=abc
hostile flag-int-range 30 "ids = '99999999999': not a valid int32" -- \
  "$reid" synth --output_dir="$tmp/s" --ids=99999999999
hostile flag-bool 30 "json = '2': not a valid bool" -- "$reid" dataset-stats --data_root="$tmp" --json=2
hostile flag-bare 30 "config needs a value" -- "$reid" print-config --config
hostile positional 30 "takes no positional argument, got 'file.txt'" -- "$reid" tokenize file.txt

# 6. Caps: synth plans, echoed parser text, number of problems.
hostile synth-out-is-file 30 "output_dir '.*a_file' exists and is not a directory" -- \
  "$reid" synth --output_dir="$tmp/a_file"
hostile synth-huge 30 "images_per_id = 2147483647" -- \
  "$reid" synth --output_dir="$tmp/s" --images_per_id=2147483647
hostile synth-product 30 "images per split; at most 1000000" -- \
  "$reid" synth --output_dir="$tmp/s" --ids=4999 --images_per_id=1000
hostile config-long-line 30 "config_long_line.textproto:[0-9]+:[0-9]+: .*no field named \"x+\.\.\." -- \
  "$reid" print-config --config="$hx/config_long_line.textproto"
"$reid" print-config --config="$hx/config_many_steps.textproto" >"$tmp/out" 2>&1
if [[ $? -eq 2 ]] && (($(wc -c <"$tmp/out") < 5000)) && grep -q "at most 1000 epochs" "$tmp/out"
then echo "ok   config-many-steps"
else echo "FAIL config-many-steps: $(wc -c <"$tmp/out") bytes"; fail=$((fail + 1)); fi

# 7. Overflow and non-finite values in the config.
cfg() {  # cfg NAME PATTERN TEXT: print-config --set=TEXT
  hostile "config-$1" 30 "$2" -- "$reid" print-config --set="$3"
}
cfg batch-overflow "ims_per_batch = 0" 'stage2 { ids_per_batch: 65536 num_instances: 65536 ims_per_batch: 0 }'
cfg n-ctx-overflow "prompt.n_ctx = 2147483647" 'prompt { n_ctx: 2147483647 }'
cfg lr-inf "stage2.base_lr = inf: must be a finite number" 'stage2 { base_lr: inf }'
cfg mean-nan "input.pixel_mean\[0\] = nan: must be a finite number" 'input { pixel_mean: [nan, 0.5, 0.5] }'
cfg timeout-1e400 "dist.timeout_s = inf: must be a finite number" 'dist { timeout_s: 1e400 }'
cfg image-huge "input.size_train.height = 100000: must be in 1..4096" \
  'input { size_train { height: 100000 width: 100000 } }'
cfg context-huge "model.context_length = 2147483647: must be in 3..4096" \
  'model { context_length: 2147483647 }'
hostile config-is-dir 30 "$tmp: not a regular file" -- "$reid" print-config --config="$tmp"

cli_finish
