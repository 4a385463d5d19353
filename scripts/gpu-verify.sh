#!/usr/bin/env bash
# Runs the tree's GPU proofs on a machine with a GPU, from a gpu-bundle made by
#   ../shared/tools/gpu-bundle .gpu/b build/tests/kernels_gpu/conv_kernels_gpu_test \
#     build/tests/server/gpu_server_test build/bench/conv/conv_bench -- tests/data
# then, on that machine: . .gpu/b/env.sh; bash scripts/gpu-verify.sh
# 1. every kernel configuration x coverage shape x dtype against the fp64 reference;
# 2. the real server on the CUDA executor (occupancy sampler on, as by default), with a
#    backtrace from cuda-gdb if it aborts;
# 3. the ResNet-50 benchmark at N = 1, 8, 32 (fp16) and cuDNN through PyTorch in the same session;
# 4. the SASS of the Hopper kind: HGMMA instructions present.
# Logs and JSON go to $OUT (or /tmp/out). SKIP_SERVER_TEST=1 skips step 2; DTYPES (default fp16)
# and BATCHES (default 1,8,32) choose the benchmark's rows; a summary is printed at the end.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
data=$(dirname "$(command -v conv_kernels_gpu_test)")/../data/data
export CONVSERVE_TEST_DATA=$data
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv >"$out/env.txt" 2>&1
cat "$out/env.txt"

conv_kernels_gpu_test --gtest_color=no >"$out/kernels_test.log" 2>&1
echo "kernels test rc=$?"
grep -E "^\[  (PASSED|FAILED)|max rel L2" "$out/kernels_test.log" |
  awk '/max rel L2/ {split($0, a, "max rel L2 "); key=$4; v=a[2]+0; if (v > worst[key]) worst[key]=v; next} {print}
       END {for (k in worst) printf "worst rel L2 %s %.2e\n", k, worst[k]}'

if [[ -z "${SKIP_SERVER_TEST:-}" ]]; then
  gpu_server_test --gtest_color=no >"$out/gpu_server_test.log" 2>&1
  rc=$?
  echo "gpu server test rc=$rc"
  grep -E "^\[  (PASSED|FAILED)|OK status|Failure" "$out/gpu_server_test.log" | head -12
  if [[ $rc -ne 0 ]] && command -v cuda-gdb >/dev/null; then
    timeout 240 cuda-gdb -batch -ex run -ex bt --args "$(command -v gpu_server_test)" \
      --gtest_color=no >"$out/gpu_server_test_gdb.log" 2>&1
    grep -E "^#[0-9]+ " "$out/gpu_server_test_gdb.log" | head -25
  fi
fi

if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$(command -v conv_bench)" >"$out/conv_bench.sass" 2>/dev/null
  echo "SASS: $(grep -c HGMMA "$out/conv_bench.sass") HGMMA, $(grep -c ' HMMA' "$out/conv_bench.sass") HMMA instructions"
  rm -f "$out/conv_bench.sass"
fi

dtypes=${DTYPES:-fp16}
batches=${BATCHES:-1,8,32}
here=$(cd "$(dirname "$0")/.." && pwd)
for dtype in ${dtypes//,/ }; do
  conv_bench --shapes="$data/resnet50.tsv" --batches="$batches" --dtypes="$dtype" --reps=25 \
    --json="$out/bench_$dtype.json" >"$out/bench_$dtype.txt" 2>&1
  echo "bench $dtype rc=$?"
done
python3 "$here/bench/conv/torch_cudnn_reference.py" "$data/resnet50.tsv" --batches="$batches" \
  --dtypes="$dtypes" --json="$out/torch_cudnn.json" >"$out/torch_cudnn.txt" 2>&1
echo "torch rc=$?"
for dtype in ${dtypes//,/ }; do
  python3 "$here/bench/conv/summarize.py" "$out/bench_$dtype.json" "$out/torch_cudnn.json" \
    --dtype="$dtype" >"$out/summary_$dtype.md" 2>&1
  tail -4 "$out/summary_$dtype.md"
done
