#!/usr/bin/env bash
# Run 5 (not run yet): the final build (ModelInfer and the echo floor on the queues too; name
# it in COMMIT): gpu_server_test, then the c = 64 sweep from the client's GPU memory
# (batching_check).
# Bundle: gpu-bundle .gpu/fz convserve-server convserve-cli convserve-echo-server gpu_server_test
#   -- tests/data; strip --strip-debug; tar | xz.
# device: carry [".gpu/fz.tar.xz"]: bash bench/results/2026-12-07_forward_queues/device_run5.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin fz final
server_test
COMMIT=${COMMIT:-unknown} batching_check final 64 cuda
device_end
