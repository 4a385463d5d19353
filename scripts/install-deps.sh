#!/usr/bin/env bash
# Installs every Debian package convserve needs to build, test and run (idempotent,
# non-interactive). Used by README.md, .ci/run and docker/Dockerfile alike.
#
#   scripts/install-deps.sh            build + test dependencies (default)
#   scripts/install-deps.sh --build    only what compiling the tree needs (docker build stage)
#   scripts/install-deps.sh --runtime  only the shared libraries the server needs to run
#
# Debian 12 and Ubuntu 24.04 (the CUDA images) name a few runtime libraries differently
# (Ubuntu's 64-bit time_t rebuilds end in t64); "a|b" entries take the first name apt knows.
#
# The CUDA toolkit (nvcc, cuDNN, CUPTI) is not a Debian package: it is expected at
# /usr/local/cuda (the CUDA container images and the development machines have it).
set -euo pipefail

mode=test
case ${1:-} in
  --runtime) mode=runtime ;;
  --build) mode=build ;;
esac

runtime_pkgs=(
  "libgrpc++1.51t64|libgrpc++1.51" "libprotobuf32t64|libprotobuf32"
  "libabsl20220623t64|libabsl20220623"
  "libprometheus-cpp-core1.0t64|libprometheus-cpp-core1.0"
  "libprometheus-cpp-pull1.0t64|libprometheus-cpp-pull1.0"
  ca-certificates
)
build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy  # scripts/make-demo-repository.py
)
test_pkgs=(
  "${build_pkgs[@]}"
  # Tests: a real Prometheus (and promtool) scrapes the service; Python clients use Debian's
  # grpcio, protobuf, numpy and torch; curl talks to the metrics endpoint; docker-compose
  # validates docker/docker-compose.yml (no Docker engine needed for that).
  prometheus python3-grpcio python3-protobuf python3-torch python3-yaml curl docker-compose
  clang-format clang-tidy
  # docs/hardening.md: libFuzzer and sanitizers (scripts/fuzz.sh, scripts/sanitize.sh); openssl
  # makes the test CA and certificates of the TLS tests.
  clang libclang-rt-14-dev openssl
)

case $mode in
  runtime) pkgs=("${runtime_pkgs[@]}") ;;
  build) pkgs=("${build_pkgs[@]}") ;;
  *) pkgs=("${test_pkgs[@]}") ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
alternatives=()
for p in "${pkgs[@]}"; do
  if [[ $p == *"|"* ]]; then
    found=0
    IFS='|' read -ra names <<<"$p"
    for n in "${names[@]}"; do installed "$n" && found=1; done
    ((found)) || alternatives+=("$p")
  else
    installed "$p" || missing+=("$p")
  fi
done
if ((${#missing[@]} == 0 && ${#alternatives[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages already installed"
  exit 0
fi

sudo=""
[[ $(id -u) -ne 0 ]] && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
for p in "${alternatives[@]}"; do
  IFS='|' read -ra names <<<"$p"
  for n in "${names[@]}"; do
    if apt-cache show "$n" >/dev/null 2>&1; then missing+=("$n"); continue 2; fi
  done
  echo "install-deps: none of ${names[*]} is known to apt" >&2
  exit 1
done
echo "install-deps: installing ${missing[*]}"
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
