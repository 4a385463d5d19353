#!/usr/bin/env bash
# One device call for PREDICTION.md (here): the copy kernel's test (plain and under
# compute-sanitizer memcheck), gpu_server_test, then bench/batching/run_h100.sh with the tensors
# in the client's GPU memory at c = 1, 8, 64 and in page-locked host memory at c = 64; with
# BASE, the same c = 64 runs from the commit before, interleaved.
# Built here for sm_90 (Release, -Werror):
#   ninja -C build-gpu conv_kernels_gpu_test gpu_server_test convserve-server convserve-cli \
#     convserve-echo-server
#   ../shared/tools/gpu-bundle .gpu/dc build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/tests/server/gpu_server_test build-gpu/server/convserve-server \
#     build-gpu/client/convserve-cli build-gpu/bench/echo/convserve-echo-server -- tests/data
#   strip --strip-debug .gpu/dc/bin/*; (cd .gpu && tar -cf - dc | xz -T2 -6 > dc.tar.xz)
# device: carry [".gpu/dc.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-07_device_copy/device_run.sh
# With BASE=base and .gpu/base.tar.xz carried too (9a19f54's convserve-server alone, see
# README.md), also the A/B at c = 64.
# PART=min (about 3 minutes): no memcheck, the shared-memory and lanes server tests only,
# c = 64 only.
# Last, the c = 64 sweep from GPU memory with LANES (default 4) executor lanes; LANES=0 skips it
# (bundles from before --gpu_lanes).
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${BUNDLE:-dc}" dc
timeout 60 conv_kernels_gpu_test --gtest_color=no --gtest_filter='CopyWithinDevice*' \
  >"$O/copy_test.log" 2>&1
echo "CopyWithinDevice test rc=$? $((SECONDS - T0))s"
grep -E "^seed|^\[  (PASSED|FAILED)|Failure|first at" "$O/copy_test.log" | head -6
if [ "${PART:-}" = min ]; then  # little device time left: the shared-memory cases only
  timeout 90 gpu_server_test --gtest_color=no --gtest_filter='*SharedMemory*:GpuLanes*' \
    >"$O/gpu_server_test.log" 2>&1
  echo "gpu_server_test (shared memory) rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|Failure" "$O/gpu_server_test.log" | head -6
else
  memcheck_rows 'CopyWithinDevice*'
  server_test
  grep -E "Failure|FAILED" "$O/gpu_server_test.log" | head -6
fi
device_save
if [ "${PART:-}" = min ]; then batching_check cuda 64 cuda; else batching_check cuda 1,8,64 cuda; fi
# The A side, when the call also carries the server of the commit before (BASE): the same
# c = 64 runs on the same machine, between two of this side.
if [ -n "${BASE:-}" ] && [ -f ".gpu/$BASE.tar.xz" ]; then
  (
    (cd .gpu && tar -xJf "$BASE.tar.xz")
    . ".gpu/$BASE/env.sh"
    COMMIT=${BASE_COMMIT:-$BASE} batching_check cuda_base 64 cuda
    COMMIT=${BASE_COMMIT:-$BASE} batching_check pin_base 64 pin
  )
  [ "${PART:-}" = min ] || batching_check cuda_again 64 cuda
fi
batching_check pin 64 pin
# The third prediction: four lanes (bundles built after --gpu_lanes existed; LANES=0 skips).
if [ "${LANES:-4}" != 0 ]; then
  EXTRA_SERVER_FLAGS=--gpu_lanes=${LANES:-4} batching_check "cuda_lanes${LANES:-4}" 64 cuda
fi
device_end
