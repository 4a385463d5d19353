#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz) with clang++, ASan and UBSan into build-fuzz/ (or
# $BUILD_DIR) and fuzzes each for a while from the committed seed corpus (docs/hardening.md).
#   scripts/fuzz.sh [seconds per harness, default 20] [harness name regex, default all]
# A crash fails the script; its input is left in <build>/tests/fuzz/fuzz-artifacts/<harness>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
filter=${2:-}
build_dir=${BUILD_DIR:-build-fuzz}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCONVSERVE_FUZZ=ON -DCONVSERVE_FUZZ_SECONDS="$seconds" \
  -DCONVSERVE_BUILD_CUDA_ENGINE=OFF -DCONVSERVE_WERROR="${CONVSERVE_WERROR:-OFF}" >/dev/null
# The chosen harnesses and what they link, nothing else (no CUDA kernels, no tests).
mapfile -t harnesses < <(ls tests/fuzz/*_fuzzer.cc | xargs -n1 basename | sed 's/\.cc$//' |
  grep -E "${filter:-.}")
((${#harnesses[@]} > 0)) || { echo "fuzz.sh: no harness matches '$filter'" >&2; exit 2; }
cmake --build "$build_dir" --parallel "$(nproc)" --target "${harnesses[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
regex=$(IFS='|'; echo "${harnesses[*]}")
ctest --test-dir "$build_dir" -L fuzz -R "^fuzz\.($regex)\$" --output-on-failure -j "$(nproc)"
# Executions per harness, from libFuzzer's final stats in ctest's log.
grep -E "^([0-9]+/[0-9]+ Testing: fuzz\.|stat::number_of_executed_units|stat::new_units_added)" \
  "$build_dir/Testing/Temporary/LastTest.log" || true
