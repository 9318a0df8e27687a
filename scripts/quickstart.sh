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
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j"$(nproc)" --target reid
BUILD_DIR="$BUILD_DIR" bash scripts/quickstart_run.sh
