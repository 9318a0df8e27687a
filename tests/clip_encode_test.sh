#!/usr/bin/env bash
# Acceptance checks of `reid clip-encode` and `reid tokenize` against the Python reference:
# features of tiny random CLIP checkpoints written by tests/clip_reference.py (TorchScript archive
# and torch.save state dict, square and non-square ReID grid) to 1e-5 relative, and OpenAI's ids
# from ../shared/clip/tokenizer_cases.tsv (skipped when absent). Usage: clip_encode_test.sh REID
set -u
reid=$1
py=/usr/bin/python3
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! $py -c 'import torch, numpy' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 with torch and numpy is missing"; exit 77
fi
$py tests/clip_reference.py fixtures "$tmp/fx" || { echo "FAIL: fixture script"; exit 1; }

compare() {  # compare NAME GOT WANT
  if $py -c "
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
r = np.abs(a - b).max() / np.abs(b).max() if a.shape == b.shape else float('inf')
print(f'{sys.argv[3]}: shape {a.shape} relative error {r:.3g}')
sys.exit(0 if r < 1e-5 else 1)" "$2" "$3" "$1"; then echo "ok   $1"; else echo "FAIL $1"; fail=$((fail + 1)); fi
}

for w in clip_jit.pt clip_state.pth; do
  if "$reid" clip-encode --weights="$tmp/fx/$w" --images_npy="$tmp/fx/images.npy" \
      --texts_file="$tmp/fx/texts.txt" --output_dir="$tmp/$w" >/dev/null; then
    compare "$w image" "$tmp/$w/image_features.npy" "$tmp/fx/image_features.npy"
    compare "$w text" "$tmp/$w/text_features.npy" "$tmp/fx/text_features.npy"
  else
    echo "FAIL $w: reid clip-encode exited $?"; fail=$((fail + 1))
  fi
done
"$reid" clip-encode --weights="$tmp/fx/clip_jit.pt" --images_npy="$tmp/fx/images_48x32.npy" \
  --image_size=48x32 --output_dir="$tmp/grid" >/dev/null ||
  { echo "FAIL 48x32 run"; fail=$((fail + 1)); }
compare "non-square 48x32 grid" "$tmp/grid/image_features.npy" "$tmp/fx/cls_proj_48x32.npy"

"$reid" clip-encode --weights="$tmp/fx/clip_jit.pt" --images_npy="$tmp/fx/images_48x32.npy" \
  --output_dir="$tmp/bad" >"$tmp/out" 2>&1
if [[ $? -eq 2 ]] && grep -q "set --image_size" "$tmp/out"; then echo "ok   grid mismatch is exit 2"
else echo "FAIL grid mismatch"; cat "$tmp/out"; fail=$((fail + 1)); fi

cases=../shared/clip/tokenizer_cases.tsv
merges=../shared/clip/bpe_simple_vocab_16e6.txt.gz
if [[ -f $cases && -f $merges ]]; then
  # One text per line on stdin: cases whose text holds a newline are left to the unit test.
  $py -c "
import json, sys
for line in open(sys.argv[1], encoding='utf-8'):
    if line.startswith('#') or not line.strip(): continue
    text, ids = line.rstrip('\n').split('\t')
    text = json.loads(text)
    if '\n' in text: continue
    open(sys.argv[2], 'a', encoding='utf-8').write(text + '\n')
    open(sys.argv[3], 'a').write(ids + '\n')" "$cases" "$tmp/texts" "$tmp/want"
  if "$reid" tokenize --bpe_vocab="$merges" <"$tmp/texts" >"$tmp/got" && diff "$tmp/want" "$tmp/got"; then
    echo "ok   tokenize: $(wc -l <"$tmp/want") shared cases"
  else
    echo "FAIL tokenize"; fail=$((fail + 1))
  fi
else
  echo "SKIP tokenize: $cases or $merges is absent"
fi
exit $((fail > 0))
