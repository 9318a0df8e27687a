#!/usr/bin/env bash
# Installs what reid-train needs on Debian 12 / Ubuntu (apt), and nothing when all is present.
# Idempotent: checks each package with dpkg-query first and says what it installs.
# Usage: install-deps.sh          the runtime set: what building `reid` and training need (the
#                                 quick-start, scripts/quickstart.sh)
#        install-deps.sh --test   the runtime set plus what only the tests use: the SLURM
#                                 daemons, Prometheus and its Pushgateway, Chromium, clang for
#                                 fuzzing, the Python references, then ONNX Runtime through
#                                 scripts/install-onnxruntime.sh (scripts/test.sh)
set -euo pipefail

RUNTIME=(
  # build
  build-essential cmake ccache pkg-config git
  # LibTorch (CPU) and a fast BLAS behind it (reference BLAS is 25x slower)
  libtorch-dev libopenblas0-pthread
  # oneDNN's headers (its library already comes with LibTorch): the linear layers' backward
  # products in training, faster than OpenBLAS's on AVX-512 CPUs
  libdnnl-dev
  # distributed runtime
  libopenmpi-dev openmpi-bin
  # config and checkpoint metadata
  libprotobuf-dev protobuf-compiler
  # ONNX export: ONNX's generated ModelProto classes and its C++ checker
  libonnx-dev
  # flags, logging
  libgflags-dev libgoogle-glog-dev
  # unit tests: the default configure (REID_BUILD_TESTS=ON) looks for them even when only `reid`
  # is built, as the quick-start does; headers and sources only
  libgtest-dev libgmock-dev
  # metrics: the exporter and Pushgateway client library linked into reid
  prometheus-cpp-dev
  # downloads of CLIP's weights (scripts/get_clip_weights.sh); the Pushgateway tests use it too
  curl
  # JPEG decoding
  libturbojpeg0-dev libjpeg62-turbo-dev
  # PNG decoding (person crops for `reid embed`, PNG datasets): data/png.cc
  libpng-dev
  # tokenizer: Unicode letter/number classes
  libpcre2-dev
  zlib1g-dev
)

TEST=(
  # the real servers the service tests run (ctest -L service)
  prometheus prometheus-pushgateway
  # single-node SLURM cluster for the sbatch and preemption tests
  munge slurmctld slurmd slurm-client
  # headless browser that renders the run report in its test
  chromium
  # fuzz targets (libFuzzer + sanitizers, scripts/fuzz.sh); libFuzzer's runtime is only a
  # Recommends of clang, which --no-install-recommends skips
  clang libclang-rt-dev
  # Python references used by tests and benchmarks
  python3 python3-numpy python3-torch python3-torchvision python3-pil
  # the static check of the alert rules and dashboard (tests/monitoring_check.py)
  python3-yaml
)

with_tests=0
for arg in "$@"; do
  case $arg in
    --test) with_tests=1 ;;
    *) echo "error: install-deps: unknown argument '$arg' (usage: install-deps.sh [--test])" >&2
       exit 2 ;;
  esac
done
PACKAGES=("${RUNTIME[@]}")
set_name="runtime"
if ((with_tests)); then
  PACKAGES+=("${TEST[@]}")
  set_name="runtime and test"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages of the $set_name set present"
else
  echo "install-deps: installing ${#missing[@]} missing package(s) of the $set_name set:" \
    "${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  echo "install-deps: done"
fi

# ONNX Runtime for the ONNX export's consumer test (npm, optional: it says so and exits 0 when
# it cannot install).
if ((with_tests)) && [[ -f "$(dirname "$0")/install-onnxruntime.sh" ]]; then
  bash "$(dirname "$0")/install-onnxruntime.sh"
fi
