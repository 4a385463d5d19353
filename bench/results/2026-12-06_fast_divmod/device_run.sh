#!/usr/bin/env bash
# One device call (about 2 minutes): FastDivmod in the GEMM kinds. The whole kernels test,
# memcheck on rows whose loaders changed, the GPU server test, and main's conv_bench against this
# one, interleaved twice on the mma.sync rows (fp16, N = 32, 8, 1, no cuDNN). Built here for sm_90:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   cp .gpu/s2/bin/conv_bench /tmp/conv_bench_main   # main 811cebf's kernels (+ row 60, unused)
#   rm -rf .gpu/fd; ../shared/tools/gpu-bundle .gpu/fd build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test /tmp/conv_bench_main \
#     -- tests/data
#   strip --strip-debug .gpu/fd/bin/*; (cd .gpu && tar -cf - fd | xz -T2 -9 > fd.tar.xz)
# device: carry [".gpu/fd.tar.xz"]: bash bench/results/2026-12-06_fast_divmod/device_run.sh
set -uo pipefail
(cd .gpu && tar -xJf fd.tar.xz)
. .gpu/fd/env.sh
D=$PWD/.gpu/fd/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/fd
mkdir -p $O
T0=$SECONDS
finish() { tar -czf $OUT/fd.tgz -C $O .; echo "total $((SECONDS - T0))s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 100 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -12
if [ $rc != 0 ]; then finish; exit 1; fi
ROWS='*/b64x64x32_w32x32_s4:*/b64x64x32_w32x32_s3_fewch:*/b64x64x64_w32x32_s3_sk4'
ROWS=$ROWS':*/b128x128x64_w64x128_s4_wgmma_ws:*/b64x64x64_w64x64_s6_wgmma'
timeout 120 compute-sanitizer --tool memcheck conv_kernels_gpu_test --gtest_color=no \
  "--gtest_filter=$ROWS" >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED)" $O/memcheck.log | tail -2
timeout 60 gpu_server_test --gtest_color=no >$O/gpu_server_test.log 2>&1
echo "gpu_server_test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/gpu_server_test.log | head -4
MMA=b128x128x32_w64x32_s4,b128x128x32_w64x64_s4,b128x128x64_w64x32_s3,b128x128x64_w64x32_s3_sk4
MMA=$MMA,b128x128x64_w64x64_s3,b128x256x32_w64x64_s3,b128x64x32_w64x32_s3_fewch,b128x64x32_w64x32_s4
MMA=$MMA,b256x128x32_w64x64_s3,b32x64x64_w32x32_s4,b32x64x64_w32x32_s4_sk4,b32x64x64_w32x32_s7
MMA=$MMA,b64x128x32_w32x64_s4,b64x128x32_w32x64_s4_sk8,b64x64x32_w32x32_s3_fewch,b64x64x32_w32x32_s4
MMA=$MMA,b64x64x64_w32x32_s3,b64x64x64_w32x32_s3_sk2,b64x64x64_w32x32_s3_sk4,b64x64x64_w32x32_s3_sk8
MMA=$MMA,b64x64x64_w32x32_s5
for round in 1 2; do
  for which in old new; do
    bin=conv_bench; [ $which = old ] && bin=conv_bench_main
    timeout 60 $bin --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
      --configs=$MMA --no-cudnn --json=$O/ab_${which}_$round.json >$O/ab_${which}_$round.txt 2>&1
    echo "$which round $round rc=$? $((SECONDS - T0))s"
  done
done
python3 bench/conv/compare_ab.py $O/ab_old_1.json,$O/ab_old_2.json \
  $O/ab_new_1.json,$O/ab_new_2.json >$O/ab_all_rows.md 2>&1
tail -4 $O/ab_all_rows.md
grep -E "b64x64x32_w32x32_s4 |b64x64x64_w32x32_s3 |fewch" $O/ab_all_rows.md
finish
