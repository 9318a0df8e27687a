#!/usr/bin/env bash
# Installs ONNX Runtime for the ONNX export's consumer test (trainer_onnx_runtime_test): npm's
# onnxruntime-node, which carries the runtime library inside the package, pinned, into
# build-tools/ort (gitignored). --ignore-scripts skips its post-install step (it would fetch
# optional GPU providers from the network); the CPU binding ships in the package itself.
# Idempotent; never needed to build. Without npm, or when the install fails (offline), it says so
# and exits 0: the test then reports Skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.30.0
PREFIX=build-tools/ort
PKG="$PREFIX/node_modules/onnxruntime-node/package.json"

if [[ -f "$PKG" ]] && grep -q "\"version\": \"$VERSION\"" "$PKG"; then
  echo "install-onnxruntime: onnxruntime-node $VERSION present"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-onnxruntime: npm not found; the ONNX Runtime test" \
    "(trainer_onnx_runtime_test) will be skipped"
  exit 0
fi
echo "install-onnxruntime: installing onnxruntime-node $VERSION into $PREFIX"
mkdir -p "$PREFIX"
# Few retries: offline, the test is skipped rather than CI waiting minutes for the registry.
if ! log=$(npm install --ignore-scripts --no-audit --no-fund --no-save --loglevel=error \
    --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 \
    --prefix "$PREFIX" "onnxruntime-node@$VERSION" 2>&1); then
  echo "install-onnxruntime: npm install failed ($(grep -m1 -o 'npm error .*' <<<"$log" || true));" \
    "the ONNX Runtime test will be skipped"
  exit 0
fi
echo "install-onnxruntime: done"
