#!/usr/bin/env bash
# One device call for two changes (each has its own PREDICTION.md):
#   ../2026-12-07_range_start: the sampler's test, the host-cost probe of a sample, the GPU
#     server test;
#   here: rows 63-64 on every coverage shape, memcheck on the sk4 row, then every row against
#     PyTorch's cuDNN (fp16 and bf16, N = 32, 8, 1) and the tuner benchmark.
# Built here for sm_90 (Release, -Werror):
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench tuner_bench gpu_server_test \
#     occupancy_sampler_test occupancy_check
#   rm -rf .gpu/ws; ../shared/tools/gpu-bundle .gpu/ws build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/bench/tuner/tuner_bench \
#     build-gpu/tests/server/gpu_server_test build-gpu/tests/metrics/occupancy_sampler_test \
#     build-gpu/bench/occupancy/occupancy_check -- tests/data
#   strip --strip-debug .gpu/ws/bin/*; (cd .gpu && tar -cf - ws | xz -T2 -9 > ws.tar.xz)
# device: carry [".gpu/ws.tar.xz"]: bash bench/results/2026-12-07_wide_split/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${B:-ws}" wide_split

timeout 90 occupancy_sampler_test --gtest_color=no >"$O/occupancy_sampler_test.log" 2>&1
echo "occupancy_sampler_test rc=$? $((SECONDS - T0))s"
grep -E "sample host time|achieved|armed|^\[  (PASSED|FAILED)|FAILED  \]" \
  "$O/occupancy_sampler_test.log"
timeout 120 occupancy_check tax 1 64 56 56 64 3 3 1 1 >"$O/tax.txt" 2>&1
echo "occupancy_check tax rc=$? $((SECONDS - T0))s"
cat "$O/tax.txt"
[ "${SERVER_TEST:-1}" = 1 ] && server_test
device_save

rows='*/b128x256x64_w64x256_s4_sk2_wgmma_tma:*/b128x256x64_w64x256_s4_sk4_wgmma_tma'
timeout 120 conv_kernels_gpu_test --gtest_color=no "--gtest_filter=$rows:ConvEngineTest.*" \
  >"$O/kernels_test.log" 2>&1
echo "kernels test (rows 63-64, engine) rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]|rel" "$O/kernels_test.log" | head -12
closing_figures
# MEMCHECK=0 / TUNER=0 (and SERVER_TEST=0 above) leave these out, for a call short of device
# time; BATCHES=32 limits the figures to N = 32.
if [ "${MEMCHECK:-1}" = 1 ]; then
  MEMCHECK_TIMEOUT=90 memcheck_rows '*/b128x256x64_w64x256_s4_sk4_wgmma_tma'
fi
if [ "${TUNER:-1}" = 1 ]; then
  timeout 90 tuner_bench --shapes="$D/resnet50.tsv" --json="$O/tuner.json" >"$O/tuner.txt" 2>&1
  echo "tuner rc=$? $((SECONDS - T0))s"
  tail -6 "$O/tuner.txt"
fi
device_end
# Both checks from one bundle (26.5 MB): .gpu/al = ws's binaries plus sv's servers, CLI and echo
# server and sv's bl/, tarred with the servers side by side (`xz -T2 -9`); B=al for either script.
# Run 1, one call for both: B=al MEMCHECK=0 TUNER=0 bash <this>; B=al SIDES="bl_1 dt_1" bash
#   bench/results/2026-12-07_range_start/device_run.sh
