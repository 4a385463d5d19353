#!/usr/bin/env bash
# One device call for branch next/deep-stages (PREDICTION.md). Built here for sm_90:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench tuner_bench
#   rm -rf .gpu/b .gpu/b.tar.xz; ../shared/tools/gpu-bundle .gpu/b \
#     build-gpu/tests/kernels_gpu/conv_kernels_gpu_test build-gpu/bench/conv/conv_bench \
#     build-gpu/bench/tuner/tuner_bench -- tests/data
#   strip --strip-debug .gpu/b/bin/*; (cd .gpu && tar -cf - b | xz -T2 -3 > b.tar.xz)
# device: carry [".gpu/b.tar.xz"], timeout_s 420:
#   bash bench/results/2026-12-05_deep_stages/device_run.sh
# Then copy the files from $OUT/out.tgz next to this script (a run folder) and compare with
# PREDICTION.md.
set -uo pipefail
cd .gpu && tar -xJf b.tar.xz && cd ..
. .gpu/b/env.sh
export CONVSERVE_TEST_DATA=$PWD/.gpu/b/data/data
D=$CONVSERVE_TEST_DATA
O=/tmp/o
mkdir -p $O
T0=$SECONDS
NEW='*/b64x64x64_w32x32_s6:*/b64x64x64_w32x32_s6_sk4:*/b128x128x64_w64x32_s3'
NEW="$NEW:*/b64x64x64_w64x64_s12_wgmma_tma:*/b64x64x64_w64x64_s12_sk4_wgmma_tma"
NEW="$NEW:*/b64x128x64_w64x128_s8_wgmma_tma"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv >$O/env.txt 2>&1
# 1. The new rows first; stop if they fail.
timeout 90 conv_kernels_gpu_test --gtest_color=no "--gtest_filter=$NEW" >$O/new_rows_test.log 2>&1
rc=$?
echo "new rows test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/new_rows_test.log | head
if [ $rc != 0 ]; then tar -czf $OUT/out.tgz -C $O .; exit 1; fi
timeout 90 compute-sanitizer --tool memcheck conv_kernels_gpu_test \
  '--gtest_filter=*/b64x64x64_w32x32_s6_sk4:*/b64x64x64_w64x64_s12_sk4_wgmma_tma' \
  >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
# 2. The whole program (every row, a table edit touches the registry of all).
timeout 150 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
echo "kernels test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -5
# 3. cuDNN through PyTorch around our benchmark (fp16); the mma.sync family and the headline.
torch_ref() {
  timeout 60 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
    --dtypes=fp16 --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
timeout 150 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
  --json=$O/bench.json >$O/bench.txt 2>&1
echo "bench rc=$? $((SECONDS - T0))s"
grep "launch floor" $O/bench.txt
torch_ref after
for family in mma hopper all; do
  python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
    --dtype=fp16 --family=$family >$O/summary_fp16_$family.md 2>&1
  echo "family $family:"
  tail -3 $O/summary_fp16_$family.md
done
# 4. Tuning time with 61 rows.
timeout 80 tuner_bench --shapes=$D/resnet50.tsv --json=$O/tuner.json >$O/tuner.txt 2>&1
echo "tuner rc=$? $((SECONDS - T0))s"
grep -E "^keys|^N=|geomean|median" $O/tuner.txt | head -6
echo "total $((SECONDS - T0))s"
tar -czf $OUT/out.tgz -C $O .
