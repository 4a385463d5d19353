#!/usr/bin/env bash
# Run 2 (about 4 minutes): run 1's changes less the plain wgmma kind's fused loop, plus five
# mma.sync rows with more warps per small tile for N = 1 (new rows count in the A/B's best row
# per layer). The whole kernels test, memcheck on the new rows, main's
# conv_bench against this one interleaved twice on every row (fp16, N = 32, 8, 1, no cuDNN),
# then the closing figures against PyTorch's cuDNN and the Triton reference. Built here for sm_90 (Release, -Werror):
#   (main in a worktree) ninja -C build-gpu conv_bench; cp build-gpu/bench/conv/conv_bench /tmp/conv_bench_main
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   rm -rf .gpu/cp; ../shared/tools/gpu-bundle .gpu/cp build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test /tmp/conv_bench_main \
#     -- tests/data
#   strip --strip-debug .gpu/cp/bin/*; (cd .gpu && tar -cf - cp | xz -T2 -9 > cp.tar.xz)
# device: carry [".gpu/cp.tar.xz"]: [CLOSING=0] bash bench/results/2026-12-06_cold_path/device_run2.sh
set -uo pipefail
(cd .gpu && tar -xJf cp.tar.xz)
. .gpu/cp/env.sh
D=$PWD/.gpu/cp/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/cp2
mkdir -p $O
T0=$SECONDS
finish() { tar -czf $OUT/cp2.tgz -C $O .; echo "total $((SECONDS - T0))s"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 120 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -12
if [ $rc != 0 ]; then finish; exit 1; fi
ROWS='*/b32x64x64_w16x32_s4:*/b32x64x64_w16x32_s4_sk4:*/b32x64x64_w16x16_s4'
ROWS=$ROWS':*/b64x64x64_w32x16_s5:*/b64x64x64_w32x16_s3_sk8:*/b64x64x64_w64x64_s6_wgmma'
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
grep -E "b32x64x64_w32x32_s4 |b64x64x64_w64x64_s6_wgmma |b64x64x64_w64x64_s6_wgmma_tma " $O/ab_all_rows.md
tar -czf $OUT/cp2.tgz -C $O .  # kept if a later step runs out of time
# The N = 1 worst mma.sync layer on the new 4- and 8-warp rows (run 1 had the 2-warp one), last:
# the device time left this session may not reach it.
ncu_items() {
  NCU=l2_1x1_512to128:1:b32x64x64_w16x32_s4,l2_1x1_512to128:1:b32x64x64_w16x16_s4 \
    OUT=$O/ncu timeout 120 bash bench/conv/run_h100.sh source
  echo "ncu rc=$? $((SECONDS - T0))s"
}
# Closing figures of this tree against the faster of two PyTorch cuDNN samples (H100 only;
# CLOSING=0 skips them).
if [ "${CLOSING:-1}" = 0 ]; then ncu_items; finish; exit 0; fi
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
tar -czf $OUT/cp2.tgz -C $O .
# Issue 3's Triton reference (NCHW, TF32) on the same layers at N = 32, against our mma.sync rows.
timeout 200 python3 bench/conv/triton_reference.py $D/resnet50.tsv --batches=32 \
  --json=$O/triton.json --ours=$O/bench.json --dtype=fp16 --family=mma >$O/triton_mma.md 2>&1
echo "triton rc=$? $((SECONDS - T0))s"
tail -2 $O/triton_mma.md
tar -czf $OUT/cp2.tgz -C $O .
ncu_items
finish
