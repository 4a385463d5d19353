#!/usr/bin/env bash
# Runs every test (the README's test command): installs, builds, then ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
[[ -n ${CI:-} ]] || { scripts/install-deps.sh && scripts/build.sh; }
ctest --test-dir "$build_dir" --output-on-failure --timeout 600 -j "$(nproc)"
