#!/usr/bin/env bash
# Run 3 (about 3 minutes): the cluster reduction compiled only into the split rows' kernels
# (ConvGemmKernel's kSplitRow). The whole kernels test, memcheck on the split rows, the GPU
# server test, main's conv_bench and this one interleaved twice on the mma.sync rows (fp16, no
# cuDNN), then fp16 and bf16 against PyTorch's cuDNN (all rows). Built here for sm_90:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   rm -rf .gpu/mc3; ../shared/tools/gpu-bundle .gpu/mc3 build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test /tmp/conv_bench_old \
#     -- tests/data        (/tmp/conv_bench_old: main's, from the stream-K bundle)
#   strip --strip-debug .gpu/mc3/bin/*; (cd .gpu && tar -cf - mc3 | xz -T2 -3 > mc3.tar.xz)
# device: carry [".gpu/mc3.tar.xz"]: bash bench/results/2026-12-06_mma_cluster_split/device_run3.sh
set -uo pipefail
B=${B:-mc3}
[ -d .gpu/$B ] || (cd .gpu && tar -xJf $B.tar.xz)
. .gpu/$B/env.sh
D=$PWD/.gpu/$B/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/mc3
mkdir -p $O
T0=$SECONDS
finish() { tar -czf $OUT/mc3.tgz -C $O .; echo "total $((SECONDS - T0))s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 100 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -12
if [ $rc != 0 ]; then finish; exit 1; fi
SPLIT='*/b32x64x64_w32x32_s4_sk4:*/b64x64x64_w32x32_s3_sk2:*/b64x64x64_w32x32_s3_sk8'
SPLIT=$SPLIT':*/b64x128x32_w32x64_s4_sk8:*/b128x128x64_w64x32_s3_sk4:*/b64x64x32_w32x16_s3_sk4_simt'
timeout 120 compute-sanitizer --tool memcheck conv_kernels_gpu_test --gtest_color=no \
  "--gtest_filter=$SPLIT" >$O/memcheck.log 2>&1
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
    bin=conv_bench; [ $which = old ] && bin=conv_bench_old
    timeout 60 $bin --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
      --configs=$MMA --no-cudnn --json=$O/ab_${which}_$round.json >$O/ab_${which}_$round.txt 2>&1
    echo "$which round $round rc=$? $((SECONDS - T0))s"
  done
done
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
    python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
      --dtype=$dtype --family=$family >$O/summary_${dtype}_$family.md 2>&1
    echo "summary_${dtype}_$family.md:"
    tail -3 $O/summary_${dtype}_$family.md
  done
done
finish
