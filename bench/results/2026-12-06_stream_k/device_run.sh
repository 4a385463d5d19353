#!/usr/bin/env bash
# One device call for the stream-K rows (about 8 minutes): the whole kernels test, memcheck on
# two stream-K rows, racecheck on small shapes (a stream-K row, and the SIMT and depthwise rows
# whose racecheck ran out of time over the full coverage list on 2026-12-06), the GPU server
# test, fp16 and bf16 against PyTorch's cuDNN at N = 32, 8, 1, and the tuner benchmark.
# Built here for sm_90 on branch next/stream-k:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench tuner_bench gpu_server_test
#   rm -rf .gpu/sk; ../shared/tools/gpu-bundle .gpu/sk build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/bench/tuner/tuner_bench \
#     build-gpu/tests/server/gpu_server_test -- tests/data
#   strip --strip-debug .gpu/sk/bin/*; (cd .gpu && tar -cf - sk | xz -T2 -3 > sk.tar.xz)
# device: carry [".gpu/sk.tar.xz"]: bash bench/results/2026-12-06_stream_k/device_run.sh
set -uo pipefail
B=${B:-sk}
[ -d .gpu/$B ] || (cd .gpu && tar -xJf $B.tar.xz)
. .gpu/$B/env.sh
D=$PWD/.gpu/$B/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/sk
mkdir -p $O
T0=$SECONDS
finish() { tar -czf $OUT/sk.tgz -C $O .; echo "total $((SECONDS - T0))s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 100 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -12
grep -E "error \].*streamk|resources \].*streamk +fp16" $O/kernels_test.log
if [ $rc != 0 ]; then finish; exit 1; fi
timeout 90 compute-sanitizer --tool memcheck conv_kernels_gpu_test --gtest_color=no \
  '--gtest_filter=*/b128x128x64_w64x128_s5_wgmma_tma_streamk:*/b64x128x64_w64x128_s6_wgmma_tma_streamk' \
  >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
# racecheck over four coverage shapes only (the full list takes minutes per row).
R=/tmp/rcdata
mkdir -p $R
{ grep "^#" $D/coverage.tsv; grep -P "^(asym_stride|depthwise|depthwise_mult|pointwise)\t" \
  $D/coverage.tsv; } >$R/coverage.tsv
grep "^#" $D/wide_channels.tsv >$R/wide_channels.tsv
grep "^#" $D/space_to_depth.tsv >$R/space_to_depth.tsv
CONVSERVE_TEST_DATA=$R timeout 120 compute-sanitizer --tool racecheck --error-exitcode 7 \
  conv_kernels_gpu_test --gtest_color=no \
  '--gtest_filter=*/b64x64x32_w32x16_s3_simt:*/b128_dw:*/b256_dw:*/b128x128x64_w64x128_s5_wgmma_tma_streamk' \
  >$O/racecheck.log 2>&1
echo "racecheck rc=$? $((SECONDS - T0))s"
grep -E "RACECHECK SUMMARY|^\[  (PASSED|FAILED)|error \]" $O/racecheck.log | head -12
timeout 60 gpu_server_test --gtest_color=no >$O/gpu_server_test.log 2>&1
echo "gpu_server_test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/gpu_server_test.log | head -4
# cuDNN through PyTorch before and after our benchmark; each layer is compared with the faster.
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
SK=b128x256x64_w64x256_s3_wgmma_tma_streamk,b128x128x64_w64x128_s5_wgmma_tma_streamk
SK=$SK,b128x64x64_w64x64_s6_wgmma_tma_streamk,b64x128x64_w64x128_s6_wgmma_tma_streamk
for dtype in fp16 bf16; do
  for args in "--family=all" "--family=all --without=$SK"; do
    name=summary_${dtype}$( [ "$args" = "--family=all" ] || echo _without_streamk)
    python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
      --dtype=$dtype $args \
      >$O/$name.md 2>&1
    echo "$name.md:"
    tail -3 $O/$name.md
  done
done
# What limits the worst layer now: Nsight Compute on l4_3x3_512 at N = 32, stream-K 128 x 128.
{ grep "^#" $D/resnet50.tsv; grep -P "^l4_3x3_512\t" $D/resnet50.tsv; } >/tmp/ncu_shape.tsv
timeout 60 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
  --section MemoryWorkloadAnalysis --launch-skip 2 --launch-count 1 --kernel-name regex:Conv \
  conv_bench --shapes=/tmp/ncu_shape.tsv --batches=32 --dtypes=fp16 --reps=3 \
  --configs=b128x128x64_w64x128_s5_wgmma_tma_streamk --no-cudnn >$O/ncu_l4_3x3_512_n32.txt 2>&1
echo "ncu rc=$? $((SECONDS - T0))s"
grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|No Eligible" \
  $O/ncu_l4_3x3_512_n32.txt | head -8
left=$((560 - (SECONDS - T0)))
if [ $left -gt 40 ]; then
  timeout $left tuner_bench --shapes=$D/resnet50.tsv --json=$O/tuner.json >$O/tuner.txt 2>&1
  echo "tuner rc=$? $((SECONDS - T0))s"
  tail -6 $O/tuner.txt
fi
finish
