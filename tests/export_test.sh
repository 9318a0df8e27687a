#!/usr/bin/env bash
# The trained model outside the tool, each format in its consumer. Modes:
#   setup     trains a tiny model (SIE on, the paper's modules on) on synthetic dataset A (12 ids,
#             3 cameras) into FIXTURE, and writes datasets B (9 other ids, 2 cameras) and C
#             (5 cameras) and 32 PNG crops of B.
#   cli       cross-domain eval on B; `reid embed` (folder, list, PNG, unreadable files listed,
#             same features as `reid extract`); export/import round trip byte-identical in every
#             tensor; bad input exits 2 naming the path and leaves no file behind.
#   clipreid  the exported .pth loaded with torch.load(weights_only=True) into a transcription of
#             CLIP-ReID's model (tests/clipreid_model.py), strict on keys and shapes; its features
#             against `reid embed` on the same crops: max relative difference <= 1e-4.
#   onnx      the exported .onnx run in ONNX Runtime (npm's onnxruntime-node) at batch 1, 7 and 32
#             against `reid embed` on the same crops: max relative difference <= 1e-4.
# Usage: export_test.sh MODE PATH/TO/reid FIXTURE_DIR   (run from the repository root)
set -u
mode=$1 reid=$2 fixture=$3
source "$(dirname "$0")/cli_lib.sh"
export OMP_NUM_THREADS=1
py=/usr/bin/python3
need_python() {  # $1: modules
  if ! $py -c "import $1" 2>/dev/null; then
    echo "SKIP: /usr/bin/python3 with $1 is missing"; exit 77
  fi
}
cfg=(--config=configs/synthetic_tiny.textproto --set='data { num_workers: 1 }'
  --set='dist { intra_op_threads: 1 timeout_s: 60 }')
run="$fixture/run"
size=(--height=64 --width=32)  # = the tiny config's input.size_test: crops need no resizing

if [[ $mode == setup ]]; then
  need_python "numpy, PIL"
  rm -rf "$fixture" && mkdir -p "$fixture"
  "$reid" synth --output_dir="$fixture/a" --ids=12 --cameras=3 --images_per_id=6 --seed=5 \
    "${size[@]}" >/dev/null || { echo "FAIL: reid synth A"; exit 1; }
  "$reid" synth --output_dir="$fixture/b" --ids=9 --cameras=2 --images_per_id=5 --seed=11 \
    "${size[@]}" >/dev/null || { echo "FAIL: reid synth B"; exit 1; }
  "$reid" synth --output_dir="$fixture/c" --ids=4 --cameras=5 --images_per_id=3 --seed=13 \
    "${size[@]}" >/dev/null || { echo "FAIL: reid synth C"; exit 1; }
  "$reid" train "${cfg[@]}" --data_root="$fixture/a" --output_dir="$run" \
    --set='model { sie_camera: true }' \
    --set='stage1 { max_epochs: 1 ims_per_batch: 24 checkpoint_period: 1 }' \
    --set='stage2 { max_epochs: 2 ids_per_batch: 6 ims_per_batch: 24 eval_period: 2 checkpoint_period: 2 }' \
    >"$fixture/train.log" 2>&1 || { echo "FAIL: reid train"; tail "$fixture/train.log"; exit 1; }
  # 32 crops of B's query and gallery as PNG (lossless: both consumers see the same pixels) and
  # their normalised arrays (x / 255 - 0.5) / 0.5, (N, 3, 64, 32), for ONNX Runtime.
  $py - "$fixture" <<'EOF' || { echo "FAIL: crops"; exit 1; }
import glob, os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
files = sorted(glob.glob(root + '/b/query/*.jpg') + glob.glob(root + '/b/bounding_box_test/*.jpg'))[:32]
os.makedirs(root + '/crops')
arrays = []
for i, f in enumerate(files):
    im = Image.open(f).convert('RGB')
    assert im.size == (32, 64), im.size
    im.save('%s/crops/%02d.png' % (root, i))
    arrays.append(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)
x = (np.stack(arrays) - 0.5) / 0.5
np.save(root + '/crops.npy', x.astype(np.float32))
print(len(files), 'crops')
EOF
  echo "fixture ready"
  exit 0
fi

if [[ ! -f "$fixture/crops.npy" ]]; then echo "FAIL: fixture missing (run mode setup)"; exit 1; fi

# Embeddings of the 32 crops (SIE model: every crop taken as camera 0).
embed() {  # $1: output prefix, further args passed on
  local out=$1; shift
  "$reid" embed --checkpoint="$run" --images="$fixture/crops" --camid=0 --out="$out" "$@" \
    --set='data { num_workers: 1 }'
}

case $mode in
cli)
  need_python numpy
  expect "cross-domain-eval" 0 "^eval \| mAP" -- "$reid" eval --checkpoint="$run" \
    --dataset=synthetic --data_root="$fixture/b" --set='data { num_workers: 1 }' \
    --out_json="$tmp/b.json"
  expect "cross-domain-other-ids" 0 "^ok" -- $py -c "
import json
r = json.load(open('$tmp/b.json'))
assert r['num_query'] > 0 and 0 < r['mAP'] <= 1, r
print('ok')"
  # C has 5 cameras, the model's SIE 3: refused before any feature is computed.
  expect "cross-domain-sie-cameras" 2 "camera [34] of .* has 3 cameras" -- "$reid" eval \
    --checkpoint="$run" --data_root="$fixture/c"
  expect "eval-needs-data" 2 "no dataset: pass --data_root" -- "$reid" eval --checkpoint="$run"
  expect "set-cannot-change-model" 2 "--set changes model" -- "$reid" eval --checkpoint="$run" \
    --data_root="$fixture/b" --set='model { vision_layers: 3 }'
  expect "embed-folder" 0 "wrote .*e1.npy \(32 x 192\)" -- embed "$tmp/e1"
  expect "embed-csv" 0 "^ok" -- $py -c "
rows = open('$tmp/e1.csv').read().splitlines()
assert rows[0] == 'path' and len(rows) == 33 and rows[1].endswith('crops/00.png'), rows[:2]
print('ok')"
  # A list file: relative paths, a comment, a missing file, a FIFO and a corrupt image.
  mkdir "$tmp/list" && cp "$fixture"/crops/0[0-4].png "$tmp/list/"
  head -c 100 "$fixture/crops/05.png" >"$tmp/list/broken.png" && mkfifo "$tmp/list/fifo.jpg"
  printf '# crops\n00.png\nmissing.jpg\n01.png\nfifo.jpg\nbroken.png\n02.png\n' >"$tmp/list/l.txt"
  expect "embed-list-skips-unreadable" 0 "3 unreadable images skipped" -- timeout 60 \
    "$reid" embed --checkpoint="$run" --images="$tmp/list/l.txt" --camid=0 --out="$tmp/e2"
  expect "embed-unreadable-listed" 0 "^ok" -- $py -c "
bad = open('$tmp/e2.unreadable.txt').read().split()
assert [b.rsplit('/', 1)[1] for b in bad] == ['broken.png', 'fifo.jpg', 'missing.jpg'], bad
import numpy as np
a, b = np.load('$tmp/e1.npy'), np.load('$tmp/e2.npy')
assert b.shape == (3, 192) and np.array_equal(a[:3], b), b.shape
print('ok')"
  expect "embed-sie-needs-camid" 2 "pass --camid" -- "$reid" embed --checkpoint="$run" \
    --images="$fixture/crops" --out="$tmp/e3"
  expect "embed-flip-differs" 0 "^differs" -- bash -c "$(declare -f embed); fixture=$fixture \
    run=$run reid=$reid; embed $tmp/e4 --flip >/dev/null && { cmp -s $tmp/e1.npy $tmp/e4.npy || echo differs; }"
  mkdir "$tmp/empty" && touch "$tmp/empty/notes.txt"
  expect "embed-no-images" 2 "no images in" -- "$reid" embed --checkpoint="$run" \
    --images="$tmp/empty" --camid=0 --out="$tmp/e5"
  expect "embed-missing-folder" 2 "missing-dir" -- "$reid" embed --checkpoint="$run" \
    --images="$tmp/missing-dir" --camid=0 --out="$tmp/e5"
  # Export -> import -> export: every tensor identical (the paper's modules are training-only).
  expect "export-clipreid" 0 "wrote .*a.pth: CLIP-ReID state dict" -- "$reid" export \
    --checkpoint="$run" --format=clipreid --out="$tmp/a.pth"
  plain=(--config=configs/synthetic_tiny.textproto --set='model { sie_camera: true }'
    --set='context_adjust { enabled: false } cross_attention { enabled: false }')
  expect "import" 0 "imported .* 12 classes, 3 cameras" -- "$reid" import --weights="$tmp/a.pth" \
    "${plain[@]}" --output_dir="$tmp/imported"
  expect "export-imported" 0 "wrote" -- "$reid" export --checkpoint="$tmp/imported" \
    --format=clipreid --out="$tmp/b.pth"
  expect "round-trip-identical" 0 "^identical" -- bash -c \
    "cmp '$tmp/a.pth' '$tmp/b.pth' && echo identical"
  expect "imported-embeds-the-same" 0 "^same" -- bash -c "'$reid' embed \
    --checkpoint='$tmp/imported' --images='$fixture/crops' --camid=0 --out='$tmp/e6' >/dev/null \
    && cmp '$tmp/e1.npy' '$tmp/e6.npy' && echo same"
  expect "import-with-modules-refused" 2 "context_adjust or cross_attention" -- "$reid" import \
    --weights="$tmp/a.pth" --config=configs/synthetic_tiny.textproto \
    --set='model { sie_camera: true }' --output_dir="$tmp/imp2"
  expect "import-wrong-shape" 2 "prompt_learner.cls_ctx" -- "$reid" import \
    --weights="$tmp/a.pth" "${plain[@]}" --set='prompt { n_ctx: 3 }' --output_dir="$tmp/imp3"
  expect "import-not-a-pth" 2 "crops.npy" -- "$reid" import --weights="$fixture/crops.npy" \
    "${plain[@]}" --output_dir="$tmp/imp4"
  expect "export-unknown-format" 2 "--format='tflite'" -- "$reid" export --checkpoint="$run" \
    --format=tflite --out="$tmp/x"
  expect "export-out-is-directory" 2 "is a directory" -- "$reid" export --checkpoint="$run" \
    --format=clipreid --out="$tmp"
  mkdir "$tmp/ro" && chmod 555 "$tmp/ro"
  if [[ $(id -u) -ne 0 ]]; then
    expect "export-not-writable" 2 "ro/x.pth" -- "$reid" export --checkpoint="$run" \
      --format=clipreid --out="$tmp/ro/x.pth"
  fi
  expect "export-missing-checkpoint" 2 "--checkpoint" -- "$reid" export \
    --checkpoint="$tmp/nothing" --format=onnx --out="$tmp/n.onnx"
  expect "failed-export-leaves-nothing" 0 "^clean" -- bash -c \
    "ls -A '$tmp' | grep -E '^(x|n\.onnx)|tmp' || echo clean"
  ;;
clipreid)
  need_python "torch, numpy"
  expect "export-clipreid" 0 "wrote" -- "$reid" export --checkpoint="$run" --format=clipreid \
    --out="$tmp/m.pth"
  expect "embed" 0 "wrote" -- embed "$tmp/e"
  expect "clipreid-python-same-features" 0 "^max_rel" -- bash -c "$py tests/clipreid_model.py \
    --weights '$tmp/m.pth' --stride 8 --height 64 --width 32 --heads 4 --text_heads 4 --camid 0 \
    --images_npy '$fixture/crops.npy' --out '$tmp/py.npy' && $py -c \"
import numpy as np
a, b = np.load('$tmp/e.npy'), np.load('$tmp/py.npy')
assert a.shape == b.shape, (a.shape, b.shape)
rel = float(np.abs(a - b).max() / np.abs(a).max())
assert rel <= 1e-4, rel
print('max_rel', rel)\""
  ;;
vitb16)
  # The released-checkpoint route at CLIP-ReID's real architecture: a ViT-B/16 state dict made by
  # Python's own torch.save from the transcription of make_model (751 classes, random values),
  # imported with configs/market1501_clipreid.textproto and CLIP's merges file, exported again:
  # the same 315 keys, shapes and bytes in every tensor.
  need_python "torch, numpy"
  bpe=${REID_CLIP_DIR:-../shared/clip}/bpe_simple_vocab_16e6.txt.gz
  if [[ ! -f $bpe ]]; then
    echo "SKIP: CLIP's merges file $bpe is missing (the prompt's token prefix needs it)"; exit 77
  fi
  expect "python-torch-save-vitb16" 0 "^saved 315" -- $py -c "
import sys, torch
sys.path.insert(0, 'tests')
import clipreid_model as m
torch.manual_seed(0)
arch = dict(vision_width=768, patch=16, stride=16, h_resolution=16, w_resolution=8,
            vision_layers=12, vision_heads=12, embed_dim=512, num_classes=751, cameras=0,
            n_cls_ctx=4, prefix_len=5, suffix_len=68, text_width=512, text_layers=12,
            text_heads=8, context_length=77, text_embed_dim=512)
model = m.ClipReid(arch)
with torch.no_grad():
    for b in (model.bottleneck, model.bottleneck_proj):
        b.running_mean.normal_(); b.running_var.uniform_(0.5, 2); b.num_batches_tracked.fill_(7)
sd = model.state_dict()
torch.save(sd, '$tmp/clip_market1501.pth')
print('saved', len(sd))"
  expect "import-vitb16" 0 "imported .* 751 classes" -- "$reid" import \
    --weights="$tmp/clip_market1501.pth" --config=configs/market1501_clipreid.textproto \
    --set="model { bpe_vocab: '$bpe' }" --output_dir="$tmp/imported"
  expect "export-vitb16" 0 "315 tensors, 751 classes, input 256x128, stride 16" -- "$reid" export \
    --checkpoint="$tmp/imported" --format=clipreid --out="$tmp/again.pth"
  expect "same-keys-shapes-values" 0 "^same 315" -- $py -c "
import torch
a = torch.load('$tmp/clip_market1501.pth', weights_only=True)
b = torch.load('$tmp/again.pth', weights_only=True)
assert sorted(a) == sorted(b), set(a) ^ set(b)
for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    assert torch.equal(a[k], b[k]), k
print('same', len(a))"
  ;;
onnx)
  need_python numpy
  ort=${REID_ORT_DIR:-build-tools/ort}
  if ! command -v node >/dev/null || [[ ! -d $ort/node_modules/onnxruntime-node ]]; then
    echo "SKIP: node or onnxruntime-node is missing (scripts/install-onnxruntime.sh)"; exit 77
  fi
  expect "export-onnx" 0 "wrote .*m.onnx: ONNX opset 17" -- "$reid" export --checkpoint="$run" \
    --format=onnx --out="$tmp/m.onnx"
  expect "embed" 0 "wrote" -- embed "$tmp/e"
  for n in 1 7 32; do
    $py -c "import numpy as np; x = np.load('$fixture/crops.npy')[:$n]; np.save('$tmp/x$n.npy', x);
np.save('$tmp/c$n.npy', np.zeros($n, dtype=np.int64))"
    expect "onnx-runtime-batch-$n" 0 "^max_rel" -- bash -c "NODE_PATH='$ort/node_modules' node \
      tests/onnx_runtime_check.js '$tmp/m.onnx' '$tmp/x$n.npy' '$tmp/y$n.npy' '$tmp/c$n.npy' \
      && $py -c \"
import numpy as np
a, b = np.load('$tmp/e.npy')[:$n], np.load('$tmp/y$n.npy')
assert a.shape == b.shape, (a.shape, b.shape)
rel = float(np.abs(a - b).max() / np.abs(a).max())
assert rel <= 1e-4, rel
print('max_rel', rel)\""
  done
  ;;
*) echo "unknown mode $mode"; exit 1 ;;
esac
cli_finish
