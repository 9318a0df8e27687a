#!/usr/bin/env bash
# Quick-start on a fresh Debian 12 machine: installs what is missing, builds, and runs the main job
# on the built-in synthetic dataset (scripts/quickstart_run.sh; the quickstart_learns test runs
# that part and checks the accuracies). It installs the runtime set only (scripts/install-deps.sh
# without --test: no SLURM, Prometheus or browser) and builds only the `reid` binary, the one
# target quickstart_run.sh runs (scripts/test.sh builds the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
# A first build is a unity build (CMake batches each library's sources into a few translation
# units, so LibTorch's headers are parsed a few times rather than once per file): the cold build
# of `reid` takes 172 s instead of 373 s on 2 cores (docs/development.md). An existing build
# folder keeps its setting; scripts/test.sh builds without it.
unity=()
[[ -f $BUILD_DIR/CMakeCache.txt ]] || unity=(-DCMAKE_UNITY_BUILD=ON)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "${unity[@]}"
cmake --build "$BUILD_DIR" -j"$(nproc)" --target reid
BUILD_DIR="$BUILD_DIR" bash scripts/quickstart_run.sh
