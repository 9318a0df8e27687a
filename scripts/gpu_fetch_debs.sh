#!/usr/bin/env bash
# Downloads (no install) the Debian 12 .deb files that scripts/gpu_check.sh unpacks on a GPU
# machine without network, into device/debs/ (ignored by git, carried by the device tool).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p device/debs && cd device/debs
apt-get download \
  libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler \
  libgflags-dev libgflags2.2 libgoogle-glog-dev libgoogle-glog0v6 libunwind8 libunwind-dev \
  libgtest-dev libgmock-dev \
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 \
  libcivetweb1 libcivetweb-dev civetweb libcurl4 libcurl4-openssl-dev libssl-dev zlib1g-dev \
  libturbojpeg0-dev libturbojpeg0 libjpeg62-turbo-dev libjpeg62-turbo \
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libhwloc15 libpmix2 \
  libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 libibverbs1 librdmacm1 \
  libpsm2-2 libpsm-infinipath1 libnl-3-200 libnl-route-3-200
du -sh .
