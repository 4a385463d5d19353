#!/usr/bin/env bash
# One device call for PREDICTION.md (about 5 minutes). Built here for sm_90, on next/mma-sk8:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench
#   rm -rf .gpu/k8 .gpu/k8.tar.xz; ../shared/tools/gpu-bundle .gpu/k8 \
#     build-gpu/tests/kernels_gpu/conv_kernels_gpu_test build-gpu/bench/conv/conv_bench -- tests/data
#   strip --strip-debug .gpu/k8/bin/*; (cd .gpu && tar -cf - k8 | xz -T2 -3 > k8.tar.xz)
# device: carry [".gpu/k8.tar.xz"]: bash bench/results/2026-12-06_mma_sk8/device_run.sh
# $OUT/out.tgz gets the logs, bench.json, the PyTorch references and the summaries.
set -uo pipefail
(cd .gpu && tar -xJf k8.tar.xz)
. .gpu/k8/env.sh
export CONVSERVE_TEST_DATA=$PWD/.gpu/k8/data/data
D=$CONVSERVE_TEST_DATA
O=/tmp/o
mkdir -p $O
T0=$SECONDS
NEW_ROW=b64x64x64_w32x32_s3_sk8
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
# 1. The new row on every coverage shape and dtype; stop if it fails. Memcheck on it.
timeout 90 conv_kernels_gpu_test --gtest_color=no "--gtest_filter=*/$NEW_ROW" >$O/new_row_test.log 2>&1
rc=$?
echo "new row test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/new_row_test.log | head
if [ $rc != 0 ]; then tar -czf $OUT/out.tgz -C $O .; exit 1; fi
timeout 120 compute-sanitizer --tool memcheck conv_kernels_gpu_test "--gtest_filter=*/$NEW_ROW" \
  >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
# 2. cuDNN through PyTorch around our benchmark, N = 1 and 8, fp16.
torch_ref() {
  timeout 90 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=8,1 \
    --dtypes=fp16 --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
timeout 200 conv_bench --shapes=$D/resnet50.tsv --batches=8,1 --dtypes=fp16 --reps=25 \
  --json=$O/bench.json >$O/bench.txt 2>&1
echo "bench rc=$? $((SECONDS - T0))s"
torch_ref after
for family in mma all; do
  for without in "" "$NEW_ROW"; do
    name=summary_fp16_${family}${without:+_without_new}.md
    python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
      --dtype=fp16 --family=$family --without=$without >$O/$name 2>&1
    echo "$name:"
    tail -3 $O/$name
  done
done
echo "total $((SECONDS - T0))s"
tar -czf $OUT/out.tgz -C $O .
