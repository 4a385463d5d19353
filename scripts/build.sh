#!/usr/bin/env bash
# Configures and builds convserve into build/ (or $BUILD_DIR).
#   scripts/build.sh [--werror] [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
# --werror turns warnings into errors; without it an existing build keeps its setting (a new one
# starts OFF), so the test step after CI's --werror build does not rebuild everything.
werror=()
if [[ ${1:-} == --werror ]]; then werror=(-DCONVSERVE_WERROR=ON); shift; fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build_dir" "${generator[@]}" "${werror[@]}" "$@"
cmake --build "$build_dir" --parallel "$(nproc)"
