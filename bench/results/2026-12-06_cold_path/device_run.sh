#!/usr/bin/env bash
# Run 1 (about 2 minutes with CLOSING=0): the fused prologue, biases read once, and the TMA
# producer's multiply-shift divisions. The whole kernels test, memcheck on the changed kinds,
# main's conv_bench against this one interleaved twice on every row (fp16, no cuDNN), Nsight
# Compute on two layers, then (without CLOSING=0) the closing figures against PyTorch's cuDNN.
# Built here for sm_90 (Release, -Werror); main's conv_bench comes from a worktree of main:
#   (in the worktree) ninja -C build-gpu conv_bench && cp build-gpu/bench/conv/conv_bench /tmp/conv_bench_main
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   rm -rf .gpu/cp; ../shared/tools/gpu-bundle .gpu/cp build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test /tmp/conv_bench_main \
#     -- tests/data
#   strip --strip-debug .gpu/cp/bin/*; (cd .gpu && tar -cf - cp | xz -T2 -9 > cp.tar.xz)
# (Restated with bench/conv/device_steps.sh after it ran: the same commands.)
# device: carry [".gpu/cp.tar.xz"]: [CLOSING=0] bash bench/results/2026-12-06_cold_path/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin cp cp
kernel_tests || { device_end; exit 1; }
ROWS='*/b32x64x64_w32x32_s7:*/b64x64x32_w32x32_s3_fewch:*/b32x64x64_w32x32_s4_sk4'
ROWS=$ROWS':*/b64x64x32_w32x16_s3_simt:*/b64x64x64_w64x64_s6_wgmma:*/b64x64x64_w64x64_s6_wgmma_tma'
memcheck_rows "$ROWS"
server_test
ab_rounds 2 conv_bench_main conv_bench
SHOWN="b32x64x64_w32x32_s4 |b32x64x64_w32x32_s7 "
grep -E "$SHOWN|b64x64x64_w64x64_s6_wgmma |b64x64x64_w64x64_s6_wgmma_tma " $O/ab_all_rows.md
# Where the N = 1 worst mma.sync layer and issue 8's worst N = 8 layer now spend their time.
NCU=l2_1x1_512to128:1:b32x64x64_w32x32_s4,l3_1x1_1024to256:8:b64x64x64_w64x64_s6_wgmma \
  OUT=$O/ncu timeout 120 bash bench/conv/run_h100.sh source
echo "ncu rc=$? $((SECONDS - T0))s"
# Closing figures of this tree against the faster of two PyTorch cuDNN samples (H100 only;
# CLOSING=0 skips them).
[ "${CLOSING:-1}" = 0 ] || closing_figures
device_end
