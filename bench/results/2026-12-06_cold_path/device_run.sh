#!/usr/bin/env bash
# One device call (about 5 minutes): the fused prologue, biases read once, and the TMA producer's
# multiply-shift divisions. The whole kernels test, memcheck on the changed kinds, main's
# conv_bench against this one interleaved twice on every row (fp16, N = 32, 8, 1, no cuDNN),
# then the closing figures against PyTorch's cuDNN. Built here for sm_90 (Release, -Werror):
#   (main in a worktree) ninja -C build-gpu conv_bench; cp build-gpu/bench/conv/conv_bench /tmp/conv_bench_main
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   rm -rf .gpu/cp; ../shared/tools/gpu-bundle .gpu/cp build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test /tmp/conv_bench_main \
#     -- tests/data
#   strip --strip-debug .gpu/cp/bin/*; (cd .gpu && tar -cf - cp | xz -T2 -9 > cp.tar.xz)
# device: carry [".gpu/cp.tar.xz"]: [CLOSING=0] bash bench/results/2026-12-06_cold_path/device_run.sh
set -uo pipefail
(cd .gpu && tar -xJf cp.tar.xz)
. .gpu/cp/env.sh
D=$PWD/.gpu/cp/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/cp
mkdir -p $O
T0=$SECONDS
finish() { tar -czf $OUT/cp.tgz -C $O .; echo "total $((SECONDS - T0))s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 120 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -12
if [ $rc != 0 ]; then finish; exit 1; fi
ROWS='*/b32x64x64_w32x32_s7:*/b64x64x32_w32x32_s3_fewch:*/b32x64x64_w32x32_s4_sk4'
ROWS=$ROWS':*/b64x64x32_w32x16_s3_simt:*/b64x64x64_w64x64_s6_wgmma:*/b64x64x64_w64x64_s6_wgmma_tma'
timeout 150 compute-sanitizer --tool memcheck conv_kernels_gpu_test --gtest_color=no \
  "--gtest_filter=$ROWS" >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED)" $O/memcheck.log | tail -2
timeout 60 gpu_server_test --gtest_color=no >$O/gpu_server_test.log 2>&1
echo "gpu_server_test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/gpu_server_test.log | head -4
for round in 1 2; do
  for which in old new; do
    bin=conv_bench; [ $which = old ] && bin=conv_bench_main
    timeout 80 $bin --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
      --no-cudnn --json=$O/ab_${which}_$round.json >$O/ab_${which}_$round.txt 2>&1
    echo "$which round $round rc=$? $((SECONDS - T0))s"
  done
done
python3 bench/conv/compare_ab.py $O/ab_old_1.json,$O/ab_old_2.json \
  $O/ab_new_1.json,$O/ab_new_2.json >$O/ab_all_rows.md 2>&1
tail -2 $O/ab_all_rows.md
grep -E "b32x64x64_w32x32_s4 |b32x64x64_w32x32_s7 |b64x64x64_w64x64_s6_wgmma |b64x64x64_w64x64_s6_wgmma_tma " $O/ab_all_rows.md
# Where the N = 1 worst mma.sync layer and issue 8's worst N = 8 layer now spend their time.
NCU=l2_1x1_512to128:1:b32x64x64_w32x32_s4,l3_1x1_1024to256:8:b64x64x64_w64x64_s6_wgmma \
  OUT=$O/ncu timeout 120 bash bench/conv/run_h100.sh source
echo "ncu rc=$? $((SECONDS - T0))s"
# Closing figures of this tree against the faster of two PyTorch cuDNN samples (H100 only;
# CLOSING=0 skips them).
if [ "${CLOSING:-1}" = 0 ]; then finish; exit 0; fi
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
