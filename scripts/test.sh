#!/usr/bin/env bash
# Installs what is missing, builds (Release, ccache) and runs every test with ctest.
# Usage: scripts/test.sh [extra ctest args]   Build folder: $BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test  # the runtime set, the tests' servers and tools, ONNX Runtime
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# Not a unity build (the quick-start's first build is one): tests build each source on its own.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_UNITY_BUILD=OFF
cmake --build "$BUILD_DIR" -j"$JOBS"
source scripts/mpi_env.sh
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j"$JOBS" "$@"
