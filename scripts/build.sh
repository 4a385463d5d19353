#!/usr/bin/env bash
# Configures and builds convserve into build/ (or $BUILD_DIR).
#   scripts/build.sh [--werror] [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
werror=OFF
if [[ ${1:-} == --werror ]]; then werror=ON; shift; fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build_dir" "${generator[@]}" -DCONVSERVE_WERROR=$werror "$@"
cmake --build "$build_dir" --parallel "$(nproc)"
