#!/usr/bin/env bash
# The quick-start's run, after the build: evaluates the untrained tiny model on the synthetic
# dataset, trains both stages on 2 ranks, and prints both results. The reid binary is
# $BUILD_DIR/bin/reid (default build); the run goes to $RUN_DIR (default runs/quickstart, emptied
# first). Each run's metrics.json holds its last evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
reid="$BUILD_DIR/bin/reid"
RUN_DIR=${RUN_DIR:-runs/quickstart}
rm -rf "$RUN_DIR"  # a fresh run each time
mkdir -p "$RUN_DIR"

echo "== reid version"
"$reid" version
source scripts/mpi_env.sh
CONFIG=configs/synthetic_tiny.textproto
start=$(date +%s)
# The untrained model's accuracy (both stages off: the run only evaluates), for comparison. With
# data.dataset SYNTHETIC and no data root, reid train generates the dataset (data.synthetic) into
# the run directory.
echo "== untrained model: evaluation only ($RUN_DIR/untrained)"
"$reid" train --config=$CONFIG --output_dir="$RUN_DIR/untrained" \
  --set='stage1 { enabled: false } stage2 { enabled: false }' | tee "$RUN_DIR/untrained.log"
echo "== training both stages on 2 ranks: mpirun -np 2 reid train --config=$CONFIG ($RUN_DIR/trained)"
mpirun -np 2 "$reid" train --config=$CONFIG --output_dir="$RUN_DIR/trained" \
  --data_root="$RUN_DIR/untrained/data" | tee "$RUN_DIR/trained.log"
summary() { grep '^done: ' "$1" | sed 's/^done: //'; }
echo "== result after $(( $(date +%s) - start )) s (synthetic dataset, see the README)"
echo "untrained: $(summary "$RUN_DIR/untrained.log")"
echo "trained:   $(summary "$RUN_DIR/trained.log")"
