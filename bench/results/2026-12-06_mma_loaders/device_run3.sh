#!/usr/bin/env bash
# One device call for run 3 (about 90 s): what main ships, run 1's loaders with rows 58-59:
# the whole kernels test, memcheck on the two rows, fp16 against one PyTorch cuDNN sample.
# Built here for sm_90: nice ninja -C build-gpu conv_kernels_gpu_test conv_bench, bundled as
#   .gpu/ld3 (gpu-bundle .gpu/ld3 <the two> -- tests/data; strip; tar | xz > .gpu/ld3.tar.xz).
# device: carry [".gpu/ld3.tar.xz"]: bash bench/results/2026-12-06_mma_loaders/device_run3.sh
set -uo pipefail
(cd .gpu && tar -xJf ld3.tar.xz)
. .gpu/ld3/env.sh
D=$PWD/.gpu/ld3/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/o3
mkdir -p $O
T0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 90 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -8
grep -E "resources.*b(32x64x64_w32x32_s7|64x64x64_w32x32_s5) +fp16" $O/kernels_test.log
if [ $rc != 0 ]; then tar -czf $OUT/out3.tgz -C $O .; exit 1; fi
timeout 60 compute-sanitizer --tool memcheck conv_kernels_gpu_test \
  '--gtest_filter=*/b32x64x64_w32x32_s7:*/b64x64x64_w32x32_s5' >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
timeout 60 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
  --json=$O/bench.json >$O/bench.txt 2>&1
echo "bench rc=$? $((SECONDS - T0))s"
timeout 60 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
  --dtypes=fp16 --json=$O/torch.json >$O/torch.txt 2>&1
echo "torch rc=$? $((SECONDS - T0))s"
for family in mma all; do
  python3 bench/conv/summarize.py $O/bench.json $O/torch.json --dtype=fp16 --family=$family \
    >$O/summary_$family.md 2>&1
  echo "summary_$family.md:"
  tail -3 $O/summary_$family.md
done
tar -czf $OUT/out3.tgz -C $O .
echo "total $((SECONDS - T0))s"
