#!/usr/bin/env bash
# Run 2 (about 3.5 minutes): run 1's changes less the plain wgmma kind's fused loop, plus five
# mma.sync rows with more warps per small tile for N = 1 (they count in the A/B's best row per
# layer). The whole kernels test, memcheck on the new rows, main's conv_bench against this one
# interleaved twice on every row, the closing figures against PyTorch's cuDNN, issue 3's Triton
# reference, and Nsight Compute on the new rows.
# Built here for sm_90 (Release, -Werror); main's conv_bench comes from a worktree of main:
#   (in the worktree) ninja -C build-gpu conv_bench && cp build-gpu/bench/conv/conv_bench /tmp/conv_bench_main
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   rm -rf .gpu/cp; ../shared/tools/gpu-bundle .gpu/cp build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test /tmp/conv_bench_main \
#     -- tests/data
#   strip --strip-debug .gpu/cp/bin/*; (cd .gpu && tar -cf - cp | xz -T2 -9 > cp.tar.xz)
# (Restated with bench/conv/device_steps.sh after it ran: the same commands.)
# device: carry [".gpu/cp.tar.xz"]: [CLOSING=0] bash bench/results/2026-12-06_cold_path/device_run2.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin cp cp2
kernel_tests || { device_end; exit 1; }
ROWS='*/b32x64x64_w16x32_s4:*/b32x64x64_w16x32_s4_sk4:*/b32x64x64_w16x16_s4'
ROWS=$ROWS':*/b64x64x64_w32x16_s5:*/b64x64x64_w32x16_s3_sk8:*/b64x64x64_w64x64_s6_wgmma'
memcheck_rows "$ROWS"
server_test
ab_rounds 2 conv_bench_main conv_bench
grep -E "b32x64x64_w32x32_s4 |b64x64x64_w64x64_s6_wgmma |b64x64x64_w64x64_s6_wgmma_tma " \
  $O/ab_all_rows.md
# The N = 1 worst mma.sync layer on the new 4- and 8-warp rows (run 1 had the 2-warp one), last:
# the device time left this session may not reach it.
ncu_items() {
  NCU=l2_1x1_512to128:1:b32x64x64_w16x32_s4,l2_1x1_512to128:1:b32x64x64_w16x16_s4 \
    OUT=$O/ncu timeout 120 bash bench/conv/run_h100.sh source
  echo "ncu rc=$? $((SECONDS - T0))s"
}
# Closing figures of this tree against the faster of two PyTorch cuDNN samples (H100 only;
# CLOSING=0 skips them), then issue 3's Triton reference (NCHW, TF32) on the same layers at
# N = 32 against our mma.sync rows.
if [ "${CLOSING:-1}" != 0 ]; then
  closing_figures
  timeout 200 python3 bench/conv/triton_reference.py $D/resnet50.tsv --batches=32 \
    --json=$O/triton.json --ours=$O/bench.json --dtype=fp16 --family=mma >$O/triton_mma.md 2>&1
  echo "triton rc=$? $((SECONDS - T0))s"
  tail -2 $O/triton_mma.md
  device_save
fi
ncu_items
device_end
