#!/usr/bin/env bash
# Builds the CPU-path tests with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and
# ThreadSanitizer (build-tsan/) and runs them: the batcher, layer store and serving core under
# concurrent load/unload/forward, the gRPC services, the model repository, the tuner, metrics,
# KServe (docs/hardening.md). The CUDA engine is left out (-DCONVSERVE_BUILD_CUDA_ENGINE=OFF):
# nvcc-compiled code cannot be instrumented, and without a GPU it would not run anyway.
#   scripts/sanitize.sh [address|thread|all (default)] [ctest -R regex]
# SANITIZE_TARGETS="serving_core_test tuner_test" builds (and so runs) only those tests.
# Any sanitizer report fails the test that triggered it, and so the script.
#
# TSan judges only what it instruments. Debian's gRPC and protobuf are not instrumented, so in
# the tests that go through gRPC it takes gRPC's own hand-offs (call arenas, completion queues)
# for races: thousands of reports per run, none in our code (docs/hardening.md). The thread run
# therefore covers the concurrent tests whose threads are all ours (the serving core, the batcher
# under load, the tuner, ...). TSAN_GRPC=1 runs every test instead, with reports written to
# <build>/tsan-reports/ rather than failing the tests, for triage.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
filter=${2:-}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
jobs=$(nproc)

run() {
  local sanitizer=$1 build_dir=$2
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONVSERVE_SANITIZE="$sanitizer" -DCONVSERVE_BUILD_CUDA_ENGINE=OFF \
    -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST >/dev/null
  # Tests are listed when ctest runs (PRE_TEST), not after each link: instrumented binaries start
  # slowly. Every test executable of the CPU path, and the server the end-to-end tests start.
  local targets
  if [[ -n ${SANITIZE_TARGETS:-} ]]; then
    read -ra targets <<<"$SANITIZE_TARGETS"
  elif [[ $sanitizer == thread && -z ${TSAN_GRPC:-} ]]; then
    targets=("${tsan_targets[@]}")
    filter=${filter:-$tsan_filter}
  else
    mapfile -t targets < <(cmake --build "$build_dir" --target help |
      sed -nE 's/^([a-z0-9_]+_test): phony$/\1/p; s/^\.\.\. ([a-z0-9_]+_test)$/\1/p' |
      grep -vE 'gpu|occupancy' | sort -u)
  fi
  cmake --build "$build_dir" --parallel "$jobs" --target convserve-server "${targets[@]}"
  # GPU tests skip without a GPU; the Python tests and the fuzz runs are not instrumented here.
  ctest --test-dir "$build_dir" --output-on-failure --timeout 900 -j "$jobs" \
    -E 'NOT_BUILT|[Gg]pu|GPU|python|fuzz\.' ${filter:+-R "$filter"}
}

# Reports go to stderr and fail the process: halt_on_error for UBSan, abort for ASan/TSan.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan-suppressions.txt}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan-suppressions.txt}
# The thread run's tests (no gRPC in them) and their gtest suites.
tsan_targets=(serving_core_test batcher_load_test batch_policy_test tuner_test
  tuning_cache_file_test kserve_infer_codec_test model_repository_test npy_test)
tsan_filter='^(ServingCoreTest|BatcherLoadTest|DecideBatchTest|BatchBucketTest|TunerKeyTest|TunerTest|TuningCache|InferCodecTest|ModelRepositoryTest|NpyTest)'
if [[ -n ${TSAN_GRPC:-} ]]; then
  mkdir -p "${BUILD_DIR:-build-tsan}/tsan-reports"
  TSAN_OPTIONS="halt_on_error=0:exitcode=0:suppressions=$PWD/scripts/tsan-suppressions.txt:log_path=$PWD/${BUILD_DIR:-build-tsan}/tsan-reports/report"
fi
case $which in
  address) run address "${BUILD_DIR:-build-asan}" ;;
  thread) run thread "${BUILD_DIR:-build-tsan}" ;;
  all) run address build-asan && run thread build-tsan ;;
  *) echo "usage: $0 [address|thread|all] [ctest -R regex]" >&2; exit 2 ;;
esac
