#!/usr/bin/env bash
# One device call (about 6 minutes) for PREDICTION.md: the GPU server test on the new server (b);
# issue 5's check (run_h100.sh: batched / eager / unbatched) with tensors in shared memory on b
# at c = 1 and 64; then in-band tensors on b and on main's server (a) at c = 1 and 64; then
# shared memory on b at c = 8, 32 and 128.
# Built here for sm_90 (Release, -Werror) at 7b3c623 (rebuild at main: the parallel copies it
# has were taken out); main's server from build-gpu at ab401df, in
# /tmp/base-bin/convserve-server-ab401df:
#   ninja -C build-gpu gpu_server_test convserve-server convserve-cli convserve-echo-server
#   ../shared/tools/gpu-bundle .gpu/shm build-gpu/tests/server/gpu_server_test \
#     build-gpu/server/convserve-server build-gpu/client/convserve-cli \
#     build-gpu/bench/echo/convserve-echo-server /tmp/base-bin/convserve-server-ab401df -- tests/data
#   strip --strip-debug .gpu/shm/bin/*; (cd .gpu && tar -cf - shm | xz -T2 -6 > shm.tar.xz)
# device: carry [".gpu/shm.tar.xz"]: bash bench/results/2026-12-06_shared_memory/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${BUNDLE:-shm}" shm
mkdir -p /tmp/main_bin
ln -sf "$(command -v convserve-server-ab401df)" /tmp/main_bin/convserve-server
# check VARIANT NAME LEVELS [shm]: variant a is main's server (ab401df), b this bundle's.
check() {
  local kind=""
  [ "${4:-}" = shm ] && kind=pin
  if [ "$1" = a ]; then
    (PATH=/tmp/main_bin:$PATH COMMIT=srv_a batching_check "$2" "$3" $kind)
  else
    COMMIT=srv_b batching_check "$2" "$3" $kind
  fi
}
# Most needed first, saved after each step: device time ran short in this session.
server_test
device_save
check b shm_b 1,64 shm
device_save
check b inband_b 1,64
device_save
check a inband_a 1,64
device_save
check b shm_b_sweep 8,32,128 shm
device_end
