#!/usr/bin/env bash
# One device call for the 58-row table (PREDICTION.md). Built here for sm_90:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench tuner_bench
#   rm -rf .gpu/b .gpu/b.tar.xz; ../shared/tools/gpu-bundle .gpu/b \
#     build-gpu/tests/kernels_gpu/conv_kernels_gpu_test build-gpu/bench/conv/conv_bench \
#     build-gpu/bench/tuner/tuner_bench -- tests/data
#   strip --strip-debug .gpu/b/bin/*; (cd .gpu && tar -cf - b | xz -T2 -3 > b.tar.xz)
# device: carry [".gpu/b.tar.xz"]: bash bench/results/2026-12-05_mma_splitk128/device_run.sh
# DTYPES (fp16,bf16) picks the benchmark's dtypes. $OUT/out.tgz gets the logs, bench.json,
# the PyTorch references, the summaries and tuner.json.
set -uo pipefail
cd .gpu && tar -xJf b.tar.xz && cd ..
. .gpu/b/env.sh
export CONVSERVE_TEST_DATA=$PWD/.gpu/b/data/data
D=$CONVSERVE_TEST_DATA
O=/tmp/o
mkdir -p $O
T0=$SECONDS
NEW_ROWS=b128x128x64_w64x32_s3_sk2,b128x128x64_w64x32_s3_sk4
DTYPES=${DTYPES:-fp16,bf16}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
# 1. The new rows first; stop if they fail. Then memcheck on one, and the whole program.
timeout 90 conv_kernels_gpu_test --gtest_color=no '--gtest_filter=*/b128x128x64_w64x32_s3*' \
  >$O/new_rows_test.log 2>&1
rc=$?
echo "new rows test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/new_rows_test.log | head
if [ $rc != 0 ]; then tar -czf $OUT/out.tgz -C $O .; exit 1; fi
timeout 90 compute-sanitizer --tool memcheck conv_kernels_gpu_test \
  '--gtest_filter=*/b128x128x64_w64x32_s3_sk4' >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
timeout 150 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
echo "kernels test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -5
# 2. cuDNN through PyTorch around our benchmark.
torch_ref() {
  timeout 90 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
    --dtypes=$DTYPES --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
timeout 200 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=$DTYPES --reps=25 \
  --json=$O/bench.json >$O/bench.txt 2>&1
echo "bench rc=$? $((SECONDS - T0))s"
grep "launch floor" $O/bench.txt
torch_ref after
for dtype in ${DTYPES//,/ }; do
  for family in mma all; do
    for without in "" "$NEW_ROWS"; do
      name=summary_${dtype}_${family}${without:+_without_new}.md
      python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
        --dtype=$dtype --family=$family --without=$without >$O/$name 2>&1
      echo "$name:"
      tail -3 $O/$name
    done
  done
done
# 3. Tuning time with 58 rows.
timeout 80 tuner_bench --shapes=$D/resnet50.tsv --json=$O/tuner.json >$O/tuner.txt 2>&1
echo "tuner rc=$? $((SECONDS - T0))s"
grep -E "^keys|^N=" $O/tuner.txt | head -4
echo "total $((SECONDS - T0))s"
tar -czf $OUT/out.tgz -C $O .
