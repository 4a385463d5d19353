#!/usr/bin/env bash
# One device call (about 7 minutes) for PREDICTION.md: the GPU server test (with the shared-
# memory cases), then issue 5's check (run_h100.sh: batched / eager / unbatched) with tensors in
# shared memory page-locked (pin) and through the server (nopin) at c = 1 and 64, in band at
# c = 1 and 64, and page-locked at c = 8, 32 and 128.
# Built here for sm_90 (Release, -Werror):
#   ninja -C build-gpu gpu_server_test convserve-server convserve-cli convserve-echo-server
#   ../shared/tools/gpu-bundle .gpu/dma build-gpu/tests/server/gpu_server_test \
#     build-gpu/server/convserve-server build-gpu/client/convserve-cli \
#     build-gpu/bench/echo/convserve-echo-server -- tests/data
#   strip --strip-debug .gpu/dma/bin/*; (cd .gpu && tar -cf - dma | xz -T2 -6 > dma.tar.xz)
# device: carry [".gpu/dma.tar.xz"]: bash bench/results/2026-12-06_shm_dma/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${BUNDLE:-dma}" dma
COMMIT=${COMMIT:-dma}
# PART=repeat (the second call): the fixed server test, then page-locked and through the
# server again at c = 64.
if [ "${PART:-}" = repeat ]; then
  server_test
  device_save
  batching_check pin_repeat 64 pin
  device_save
  batching_check nopin_repeat 64 nopin
  device_end
  exit 0
fi
# PART=due (the third call, PREDICTION.md's second to fourth parts): the host link's copy rates
# (bench/batching/pcie_probe.py), then page-locked and in band at c = 8 and 64 with the batcher's due-queue change, then page-locked at c = 64 over 16 and
# 32 client connections instead of 8.
if [ "${PART:-}" = due ]; then
  timeout 60 python3 bench/batching/pcie_probe.py --json "$O/pcie.json" 2>&1 | tee "$O/pcie.txt"
  batching_check pin_due 8,64 pin
  device_save
  batching_check inband_due 8,64
  device_save
  CONNECTIONS=16 batching_check pin_conn16 64 pin
  device_save
  CONNECTIONS=32 batching_check pin_conn32 64 pin
  device_end
  exit 0
fi
# Most needed first, saved after each step: device time is short.
server_test
device_save
batching_check pin 1,64 pin
device_save
batching_check nopin 1,64 nopin
device_save
batching_check pin_sweep 8,32,128 pin
device_save
batching_check inband 1,64
device_end
