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
check() {  # check VARIANT NAME LEVELS [shm]
  (
    [ "$1" = a ] && export PATH=/tmp/main_bin:$PATH
    if [ "${4:-}" = shm ]; then
      export SERVER_FLAGS=--allow_shared_memory SERVER_PERF_FLAGS=--shared_memory
    fi
    OUT=/tmp/r_$2 SKIP_GPU_TEST=1 LEVELS=$3 ROUNDS=0 DURATION_S=3 COMMIT=srv_$1 \
      timeout 200 bash bench/batching/run_h100.sh >/tmp/r_$2.log 2>&1
  )
  echo "== $2 ($((SECONDS - T0))s)"
  grep -E "^(echo_c|batched|eager|unbatched) |^c=" /tmp/r_$2/summary.txt 2>/dev/null | tail -24
  mkdir -p "$O/$2"
  cp /tmp/r_$2/summary.txt /tmp/r_$2/results.json /tmp/r_$2/logs.tgz /tmp/r_$2.log "$O/$2/" \
    2>/dev/null
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
