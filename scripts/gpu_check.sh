#!/usr/bin/env bash
# GPU machine check (run through the device tool from the repository root): builds reid-train
# against the CUDA LibTorch of the machine's Python torch, with Debian's -dev packages unpacked
# from device/debs/*.deb into a private prefix, then runs the GPU tests and prints a table last.
# Prepare here first: scripts/gpu_fetch_debs.sh (downloads the .deb files into device/debs).
set -uo pipefail
FINAL_OUT=${OUT:-/tmp/gpu_out}
OUT=/tmp/gpu_logs
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL_OUT"
PREFIX=/tmp/reid_prefix
LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
declare -a rows
row() { rows+=("$(printf '%-28s %s' "$1" "$2")"); }
step() { echo; echo "== $*"; }

step "unpack Debian packages into $PREFIX"
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
for f in device/debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
# Some CMake and pkg-config files name /usr literally: point them at the prefix.
grep -rlE '"/usr[/"]|^prefix=/usr' "$LIBDIR/cmake" "$LIBDIR/pkgconfig" 2>/dev/null |
  xargs -r sed -i -E "s#\"/usr([/\"])#\"$PREFIX/usr\\1#g; s#^prefix=/usr#prefix=$PREFIX/usr#"
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
export OPAL_PREFIX=$PREFIX/usr
export PATH=$PREFIX/usr/bin:$PATH

PY=$(command -v python3)
TORCH_PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
NCCL_HOME=$($PY -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null)
[ -e "$NCCL_HOME/lib/libnccl.so" ] || ln -sf "$(ls "$NCCL_HOME"/lib/libnccl.so.* | head -1)" "$NCCL_HOME/lib/libnccl.so"
export NCCL_HOME
export LD_LIBRARY_PATH=$LIBDIR:$LIBDIR/openmpi/lib:$NCCL_HOME/lib:$TORCH_LIB:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda)'

step "configure + build"
BUILD=/tmp/reid_build
t0=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" \
  -DProtobuf_PROTOC_EXECUTABLE="$PREFIX/usr/bin/protoc" \
  -DProtobuf_INCLUDE_DIR="$PREFIX/usr/include" -DProtobuf_LIBRARY="$LIBDIR/libprotobuf.so" \
  -DMPI_C_INCLUDE_PATH="$LIBDIR/openmpi/include" -DMPI_C_LIB_NAMES=mpi \
  -DMPI_mpi_LIBRARY="$LIBDIR/openmpi/lib/libmpi.so" -DMPI_C_COMPILER=NOTFOUND \
  -DNCCL_INCLUDE_DIR="$NCCL_HOME/include" -DNCCL_LIBRARY="$NCCL_HOME/lib/libnccl.so" \
  -DREID_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/configure.log" 2>&1
rc=$?; tail -5 "$OUT/configure.log"
if [ $rc -ne 0 ]; then row configure "FAILED (see configure.log)"; tail -40 "$OUT/configure.log"; fi
cmake --build "$BUILD" -j16 -- -k 0 >"$OUT/build.log" 2>&1
rc=$?; t1=$(date +%s)
row "build (16 cores)" "$([ $rc -eq 0 ] && echo ok || echo FAILED) in $((t1 - t0)) s"
[ $rc -eq 0 ] || grep -E "error|FAILED" "$OUT/build.log" | head -30

step "reid version"
ldd "$BUILD/bin/reid" | grep "not found" | tee "$OUT/ldd_missing.txt"
"$BUILD/bin/reid" version 2>&1 | tee "$OUT/version.txt"
row "CUDA devices seen by reid" "$(grep 'CUDA devices' "$OUT/version.txt" | awk '{print $3}')"

step "GPU tests (ctest -L gpu; one GPU, so no 2-rank NCCL test)"
(cd "$BUILD" && ctest -L gpu -E 'np2' --output-on-failure --timeout 120) >"$OUT/gpu_tests.log" 2>&1
row "ctest -L gpu" "$(grep -E 'tests passed|No tests' "$OUT/gpu_tests.log" | tail -1)"
grep -E "Passed|Failed|Skipped|\\*\\*\\*" "$OUT/gpu_tests.log" | head -20

step "unit tests on LibTorch 2.x (ctest -L 'model|data', CPU)"
(cd "$BUILD" && REID_PYTHON=$PY ctest -L 'model|data' -LE 'gpu|mpi|slow' --timeout 120 -j16) >"$OUT/unit_tests.log" 2>&1
row "ctest model+data (torch 2.x)" "$(grep -E 'tests passed' "$OUT/unit_tests.log" | tail -1)"
grep -E "\\*\\*\\*Failed|Not Run" "$OUT/unit_tests.log" | head -20

step "short training on CUDA: the tiny synthetic config, fp32 vs fp16 (loss scaling) vs bf16"
for prec in fp32 fp16 bf16; do
  case $prec in
    fp32) set_amp='stage1 { amp: false } stage2 { amp: false }' ;;
    fp16) set_amp='stage1 { amp: true amp_dtype: FLOAT16 } stage2 { amp: true amp_dtype: FLOAT16 }' ;;
    bf16) set_amp='stage1 { amp: true amp_dtype: BFLOAT16 } stage2 { amp: true amp_dtype: BFLOAT16 }' ;;
  esac
  t0=$(date +%s)
  timeout 300 "$BUILD/bin/reid" train --config=configs/synthetic_tiny.textproto --device=cuda \
    --output_dir="/tmp/reid_train_$prec" --set="$set_amp" >"$OUT/train_$prec.log" 2>&1
  rc=$?
  row "train tiny cuda $prec" "rc=$rc $(( $(date +%s) - t0 )) s $(grep '^done: ' "$OUT/train_$prec.log" | cut -c1-60) $(grep -c 'gradient overflow' /tmp/reid_train_$prec/logs/rank0.log 2>/dev/null) overflow skips"
  grep -E "^error|Check failed" "$OUT/train_$prec.log" | head -5
done

if [ -x "$BUILD/bin/bench_train_step" ]; then
  step "bench_train_step: stage-2 training step on the GPU, ours vs Python PyTorch"
  REID_PYTHON=$PY timeout 300 "$BUILD/bin/bench_train_step" --device=cuda --json \
    >"$OUT/bench_train_step_cuda.json" 2>&1
  row "bench_train_step cuda" "$(head -c 400 "$OUT/bench_train_step_cuda.json")"
fi

if [ -x "$BUILD/bin/bench_clip" ]; then
  step "bench_clip: ViT-B/16 forward+backward on the GPU, ours vs Python PyTorch (same machine)"
  for b in 8 64; do
    REID_PYTHON=$PY "$BUILD/bin/bench_clip" --device=cuda --batch=$b --iters=10 --json \
      >"$OUT/bench_clip_cuda_b$b.json" 2>&1
    row "bench_clip cuda batch $b" "$(head -c 400 "$OUT/bench_clip_cuda_b$b.json")"
  done
fi

echo; echo "== summary"; printf '%s\n' "${rows[@]}" | tee "$OUT/summary.txt"
# The device tool brings back at most 8 files.
for f in summary.txt version.txt gpu_tests.log unit_tests.log build.log train_fp16.log \
         bench_train_step_cuda.json configure.log; do
  [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FINAL_OUT/"
done
