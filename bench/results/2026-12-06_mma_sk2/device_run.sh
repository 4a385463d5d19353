#!/usr/bin/env bash
# One device call (about 5 minutes), the closing run of 2026-12-06: row 60
# (b128x128x64_w64x32_s3_sk2) and what main ships. The whole kernels test, memcheck on the new
# row, the GPU server test, fp16 and bf16 against PyTorch's cuDNN at N = 32, 8, 1 (all rows; the
# summaries read with and without row 60), and the tuner benchmark. Built here for sm_90:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench tuner_bench gpu_server_test
#   rm -rf .gpu/s2; ../shared/tools/gpu-bundle .gpu/s2 build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/bench/tuner/tuner_bench \
#     build-gpu/tests/server/gpu_server_test -- tests/data
#   strip --strip-debug .gpu/s2/bin/*; (cd .gpu && tar -cf - s2 | xz -T2 -3 > s2.tar.xz)
# device: carry [".gpu/s2.tar.xz"]: bash bench/results/2026-12-06_mma_sk2/device_run.sh
set -uo pipefail
B=${B:-s2}
[ -d .gpu/$B ] || (cd .gpu && tar -xJf $B.tar.xz)
. .gpu/$B/env.sh
D=$PWD/.gpu/$B/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/s2
mkdir -p $O
T0=$SECONDS
finish() { tar -czf $OUT/s2.tgz -C $O .; echo "total $((SECONDS - T0))s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 100 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -12
grep -E "(error|resources) \].*b128x128x64_w64x32_s3_sk2 " $O/kernels_test.log
if [ $rc != 0 ]; then finish; exit 1; fi
timeout 90 compute-sanitizer --tool memcheck conv_kernels_gpu_test --gtest_color=no \
  '--gtest_filter=*/b128x128x64_w64x32_s3_sk2' >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED)" $O/memcheck.log | tail -2
timeout 60 gpu_server_test --gtest_color=no >$O/gpu_server_test.log 2>&1
echo "gpu_server_test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/gpu_server_test.log | head -4
torch_ref() {
  timeout 120 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
    --dtypes=fp16,bf16 --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
timeout 220 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16,bf16 --reps=25 \
  --json=$O/bench.json >$O/bench.txt 2>&1
echo "bench rc=$? $((SECONDS - T0))s"
grep "launch floor" $O/bench.txt
torch_ref after
for dtype in fp16 bf16; do
  for family in all mma; do
    for without in "" b128x128x64_w64x32_s3_sk2; do
      name=summary_${dtype}_$family${without:+_without_sk2}
      python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
        --dtype=$dtype --family=$family --without=$without >$O/$name.md 2>&1
      echo "$name.md:"
      tail -3 $O/$name.md
    done
  done
done
left=$((560 - (SECONDS - T0)))
if [ $left -gt 40 ]; then
  timeout $left tuner_bench --shapes=$D/resnet50.tsv --json=$O/tuner.json >$O/tuner.txt 2>&1
  echo "tuner rc=$? $((SECONDS - T0))s"
  tail -6 $O/tuner.txt
fi
finish
