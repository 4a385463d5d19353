# The steps a kernel round's device call is made of, for the scripts under bench/results/ to
# source on the device machine (from the repository root, after `set -uo pipefail`):
#
#   . bench/conv/device_steps.sh
#   device_begin BUNDLE RESULTS   # unpack .gpu/BUNDLE.tar.xz; results go to $OUT/RESULTS.tgz
#   kernel_tests || { device_end; exit 1; }
#   memcheck_rows '*/row_a:*/row_b'
#   server_test
#   ab_rounds 2 conv_bench_main conv_bench   # interleaved A/B, then bench/conv/compare_ab.py
#   closing_figures                           # against PyTorch's cuDNN, fp16 and bf16
#   device_end
#
# Each step writes its logs under $O, prints one line with its exit status and the seconds
# since device_begin, and keeps going on failure (except where the caller says otherwise).

# Unpacks the gpu-bundle .gpu/$1.tar.xz and sets D (its data), O (the results folder) and
# CONVSERVE_TEST_DATA; $2 names the archive device_end writes under $OUT.
device_begin() {
  (cd .gpu && tar -xJf "$1.tar.xz")
  . ".gpu/$1/env.sh"
  D=$PWD/.gpu/$1/data/data
  export CONVSERVE_TEST_DATA=$D
  O=/tmp/$2
  RESULTS=$2
  mkdir -p "$O"
  T0=$SECONDS
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >"$O/env.txt" 2>&1
}

# Packs $O into $OUT (again after each long step, so a call that runs out of time keeps what
# it had).
device_save() { tar -czf "$OUT/$RESULTS.tgz" -C "$O" .; }
device_end() {
  device_save
  echo "total $((SECONDS - T0))s"
}

# Every row on every coverage shape; returns the test's status.
kernel_tests() {
  timeout 120 conv_kernels_gpu_test --gtest_color=no >"$O/kernels_test.log" 2>&1
  local rc=$?
  echo "kernels test rc=$rc $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" "$O/kernels_test.log" | head -12
  return $rc
}

# compute-sanitizer memcheck on the rows of gtest filter $1.
memcheck_rows() {
  timeout "${MEMCHECK_TIMEOUT:-150}" compute-sanitizer --tool memcheck conv_kernels_gpu_test \
    --gtest_color=no "--gtest_filter=$1" >"$O/memcheck.log" 2>&1
  echo "memcheck rc=$? $((SECONDS - T0))s"
  grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED)" "$O/memcheck.log" | tail -2
}

server_test() {
  timeout 150 gpu_server_test --gtest_color=no >"$O/gpu_server_test.log" 2>&1
  echo "gpu_server_test rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" "$O/gpu_server_test.log" | head -4
  # Issue 11 on one GPU, where the bundle has it: the server with --devices=all.
  command -v multi_gpu_server_test >/dev/null || return 0
  timeout 150 multi_gpu_server_test --gtest_color=no >"$O/multi_gpu_server_test.log" 2>&1
  echo "multi_gpu_server_test rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" "$O/multi_gpu_server_test.log" | head -4
}

# Same-call A/B: $1 rounds of (old binary $2, new binary $3) on every row, fp16, N = 32, 8, 1,
# no cuDNN; extra arguments go to both. Then old / new per row in $O/ab_all_rows.md.
ab_rounds() {
  local rounds=$1 old_bin=$2 new_bin=$3
  shift 3
  local round which bin olds="" news=""
  for round in $(seq "$rounds"); do
    for which in old new; do
      bin=$new_bin
      [ $which = old ] && bin=$old_bin
      timeout 80 "$bin" --shapes="$D/resnet50.tsv" --batches=32,8,1 --dtypes=fp16 --reps=25 \
        --no-cudnn --json="$O/ab_${which}_$round.json" "$@" >"$O/ab_${which}_$round.txt" 2>&1
      echo "$which round $round rc=$? $((SECONDS - T0))s"
    done
    olds=$olds${olds:+,}$O/ab_old_$round.json
    news=$news${news:+,}$O/ab_new_$round.json
  done
  python3 bench/conv/compare_ab.py "$olds" "$news" >"$O/ab_all_rows.md" 2>&1
  tail -2 "$O/ab_all_rows.md"
  device_save
}

# PyTorch's cuDNN before and after conv_bench (fp16 and bf16, N = $BATCHES, default 32,8,1, every
# row), then summarize.py per dtype for all rows and the mma.sync family.
closing_figures() {
  local dtype family
  torch_sample before
  timeout 220 conv_bench --shapes="$D/resnet50.tsv" --batches="${BATCHES:-32,8,1}" \
    --dtypes=fp16,bf16 --reps=25 --json="$O/bench.json" >"$O/bench.txt" 2>&1
  echo "bench rc=$? $((SECONDS - T0))s"
  grep "launch floor" "$O/bench.txt"
  torch_sample after
  for dtype in fp16 bf16; do
    for family in all mma; do
      python3 bench/conv/summarize.py "$O/bench.json" "$O/torch_before.json" \
        "$O/torch_after.json" --dtype=$dtype --family=$family >"$O/summary_${dtype}_$family.md" 2>&1
      echo "summary_${dtype}_$family.md:"
      tail -3 "$O/summary_${dtype}_$family.md"
    done
  done
  device_save
}

torch_sample() {
  timeout 120 python3 bench/conv/torch_cudnn_reference.py "$D/resnet50.tsv" \
    --batches="${BATCHES:-32,8,1}" --dtypes=fp16,bf16 --json="$O/torch_$1.json" \
    >"$O/torch_$1.txt" 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}

# bench/batching/run_h100.sh's batched / eager / unbatched sweep at concurrency $2 (a list), with
# the tensors in band, in shared memory page-locked by the server ($3 = pin), in shared memory
# it reads and writes through the descriptor ($3 = nopin), or in the client's GPU memory
# ($3 = cuda); prints its summary lines, keeps its files under $O/$1 and saves. The caller's
# environment passes through (CONNECTIONS, COMMIT, PATH for another build's server,
# EXTRA_SERVER_FLAGS added to the server's flags, e.g. --gpu_lanes=4);
# CHECK_TIMEOUT bounds the sweep (200 s).
batching_check() {
  (
    case "${3:-}" in
      pin) export SERVER_FLAGS=--allow_shared_memory SERVER_PERF_FLAGS=--shared_memory ;;
      nopin)
        export SERVER_FLAGS="--allow_shared_memory --nopin_shared_memory"
        export SERVER_PERF_FLAGS=--shared_memory
        ;;
      cuda)
        export SERVER_FLAGS=--allow_shared_memory SERVER_PERF_FLAGS=--cuda_shared_memory=0
        ;;
    esac
    export SERVER_FLAGS="${SERVER_FLAGS:-} ${EXTRA_SERVER_FLAGS:-}"
    OUT=/tmp/r_$1 SKIP_GPU_TEST=1 LEVELS=$2 ROUNDS=0 DURATION_S=3 COMMIT=${COMMIT:-unknown} \
      timeout "${CHECK_TIMEOUT:-200}" bash bench/batching/run_h100.sh >/tmp/r_$1.log 2>&1
  )
  echo "== $1 ($((SECONDS - T0))s)"
  grep -E "^(echo_c|batched|eager|unbatched) |^c=|^[^ ]+/(batched|eager|unbatched) " \
    /tmp/r_$1/summary.txt 2>/dev/null | tail -30
  mkdir -p "$O/$1"
  cp /tmp/r_$1/summary.txt /tmp/r_$1/results.json /tmp/r_$1/logs.tgz /tmp/r_$1.log "$O/$1/" \
    2>/dev/null
  device_save
}

# The occupancy sampler's gauges in the last metrics scrape of batching_check $1.
sampler_metrics() {
  tar -xzOf "/tmp/r_$1/logs.tgz" --wildcards '*metrics.txt' 2>/dev/null |
    grep -E "^convserve_(kernel_achieved_occupancy|occupancy_sampler_enabled)" | head -3
}

# Executor stage means per batch over the batching_check runs named in $@, into $O/stages.txt.
stage_means() {
  python3 bench/batching/stage_means.py $(for s in "$@"; do echo "$O/$s"; done) 2>&1 |
    tee "$O/stages.txt"
}

# One line per row of the open-loop perf result $O/perf_$1.json: side $1, sampler interval $2,
# throughput, p50 / p99 / p99.9 / max latency and errors (not sent included).
open_loop_summary() {
  python3 - "$O/perf_$1.json" "$1" "$2" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    lat = r["latency_us"]
    print(f"{sys.argv[2]:8s} interval {sys.argv[3]:4s} rate {r['load']:>7g} req/s {r['throughput_rps']:>8.0f}"
          f"  p50 {lat['p50']:>7.0f}  p99 {lat['p99']:>7.0f}  p99.9 {lat['p999']:>8.0f}"
          f"  max {lat['max']:>9.0f} us  errors {r['errors'] + r['not_sent']}")
PY
}
