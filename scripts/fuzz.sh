#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ (fuzz/CMakeLists.txt) and runs each for
# SECONDS from its seed corpus. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 8 s)
# A long run of one target: scripts/fuzz.sh 3600 fuzz_torch_save
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}; shift || true
if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ is missing (apt-get install clang)"; exit 1
fi
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S fuzz -B "$BUILD_DIR" >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-$(nproc)}"
bash fuzz/run.sh "$BUILD_DIR" "$secs" "$@"
