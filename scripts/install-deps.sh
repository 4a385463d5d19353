#!/usr/bin/env bash
# Installs every Debian package convserve needs to build, test and run (idempotent,
# non-interactive). Used by README.md, .ci/run and docker/Dockerfile alike.
#
#   scripts/install-deps.sh            build + test dependencies (default)
#   scripts/install-deps.sh --runtime  only the shared libraries the server needs to run
#
# The CUDA toolkit (nvcc, cuDNN, CUPTI) is not a Debian package: it is expected at
# /usr/local/cuda (the CUDA container images and the development machines have it).
set -euo pipefail

mode=build
[[ ${1:-} == --runtime ]] && mode=runtime

runtime_pkgs=(
  libgrpc++1.51 libprotobuf32 libabsl20220623 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  ca-certificates
)
build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  # Tests: a real Prometheus (and promtool) scrapes the service; Python clients use Debian's
  # grpcio, protobuf, numpy and torch; curl talks to the metrics endpoint.
  prometheus python3 python3-grpcio python3-protobuf python3-numpy python3-torch curl
  clang-format clang-tidy
)

if [[ $mode == runtime ]]; then pkgs=("${runtime_pkgs[@]}"); else pkgs=("${build_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages already installed"
  exit 0
fi

sudo=""
[[ $(id -u) -ne 0 ]] && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
