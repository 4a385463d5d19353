#!/usr/bin/env bash
# One device call for PREDICTION.md (here) and parts two to four of
# ../2026-12-06_shm_dma/PREDICTION.md: the host link's copy rates, the GPU server test (with the
# CUDA IPC case), then issue 5's check (bench/batching/run_h100.sh: batched / eager / unbatched)
# at c = 8 and 64 with the tensors in the client's GPU memory, page-locked host memory, and in
# band; then page-locked over 16 connections.
# Built here for sm_90 (Release, -Werror):
#   ninja -C build-gpu gpu_server_test convserve-server convserve-cli convserve-echo-server
#   ../shared/tools/gpu-bundle .gpu/ipc build-gpu/tests/server/gpu_server_test \
#     build-gpu/server/convserve-server build-gpu/client/convserve-cli \
#     build-gpu/bench/echo/convserve-echo-server -- tests/data
#   strip --strip-debug .gpu/ipc/bin/*; (cd .gpu && tar -cf - ipc | xz -T2 -6 > ipc.tar.xz)
# device: carry [".gpu/ipc.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-07_cuda_ipc/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${BUNDLE:-ipc}" ipc
# PART=min (little device time left): the CUDA IPC test alone, then c = 64 from GPU memory and
# from page-locked host memory.
if [ "${PART:-}" = min ]; then
  timeout 90 gpu_server_test --gtest_color=no --gtest_filter='GpuCudaSharedMemoryTest.*' \
    >"$O/gpu_server_test.log" 2>&1
  echo "gpu_server_test (CUDA IPC) rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|Failure" "$O/gpu_server_test.log" | head -6
  device_save
  batching_check cuda 64 cuda
  device_save
  batching_check pin 64 pin
  device_end
  exit 0
fi
timeout 60 python3 bench/batching/pcie_probe.py --json "$O/pcie.json" 2>&1 | tee "$O/pcie.txt"
device_save
server_test
grep -E "GpuCudaSharedMemoryTest|Failure|error" "$O/gpu_server_test.log" | head -12
device_save
batching_check cuda 8,64 cuda
device_save
batching_check pin 8,64 pin
device_save
batching_check inband 8,64
device_save
CONNECTIONS=16 batching_check pin_conn16 64 pin
device_end
