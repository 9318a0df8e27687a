#!/usr/bin/env bash
# Installs what reid-train needs on Debian 12 / Ubuntu (apt), and nothing when all is present.
# Idempotent: checks each package with dpkg-query first and says what it installs.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ccache pkg-config git
  # LibTorch (CPU) and a fast BLAS behind it (reference BLAS is 25x slower)
  libtorch-dev libopenblas0-pthread
  # distributed runtime
  libopenmpi-dev openmpi-bin
  # config and checkpoint metadata
  libprotobuf-dev protobuf-compiler
  # ONNX export: ONNX's generated ModelProto classes and its C++ checker
  libonnx-dev
  # flags, logging, tests
  libgflags-dev libgoogle-glog-dev libgtest-dev libgmock-dev
  # metrics: the exporter library, and the real servers the service tests run (ctest -L service)
  prometheus-cpp-dev prometheus prometheus-pushgateway curl
  # single-node SLURM cluster for the sbatch and preemption tests
  munge slurmctld slurmd slurm-client
  # headless browser that renders the run report in its test
  chromium
  # JPEG decoding
  libturbojpeg0-dev libjpeg62-turbo-dev
  # PNG decoding (person crops for `reid embed`, PNG datasets): data/png.cc
  libpng-dev
  # tokenizer: Unicode letter/number classes
  libpcre2-dev
  zlib1g-dev
  # fuzz targets (libFuzzer + sanitizers, scripts/fuzz.sh); libFuzzer's runtime is only a
  # Recommends of clang, which --no-install-recommends skips
  clang libclang-rt-dev
  # Python references used by tests and benchmarks
  python3 python3-numpy python3-torch python3-torchvision python3-pil
  # the static check of the alert rules and dashboard (tests/monitoring_check.py)
  python3-yaml
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
