#!/usr/bin/env bash
# One device call (about 6 minutes) for PREDICTION.md: the GPU server test on the new server,
# then main's server (a) against the zero-copy one (b) with stage_breakdown.sh, a b b a, each
# beside its own echo floor (protobuf messages); one more b pass against the echo server in its
# zero-copy mode (the stricter floor); then issue 5's check, run_h100.sh (levels 1 and 64, five
# interleaved c = 1 rounds of echo and eager, batched / eager / unbatched at c = 64), on b and on a.
# Built here for sm_90 (Release, -Werror); main's binaries from build-gpu at ab15c5c's parent's
# tree, in /tmp/base-bin (convserve-server-main, convserve-echo-server-main):
#   ninja -C build-gpu gpu_server_test convserve-server convserve-cli convserve-echo-server
#   ../shared/tools/gpu-bundle .gpu/zc build-gpu/tests/server/gpu_server_test \
#     build-gpu/server/convserve-server build-gpu/client/convserve-cli \
#     build-gpu/bench/echo/convserve-echo-server /tmp/base-bin/convserve-server-main \
#     /tmp/base-bin/convserve-echo-server-main -- tests/data
#   strip --strip-debug .gpu/zc/bin/*; (cd .gpu && tar -cf - zc | xz -T2 -6 > zc.tar.xz)
# device: carry [".gpu/zc.tar.xz"]: bash bench/results/2026-12-06_zero_copy/device_run.sh
# PART=repeat (about 5 minutes, a second call): issue 5's check again, b, a, then b against the
# echo server's zero-copy mode.
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${BUNDLE:-zc}" "zc${PART:+_$PART}"
# a: main's server and echo server, first on PATH under their own names; b: this tree's.
mkdir -p /tmp/main_bin
if command -v convserve-server-main >/dev/null; then
  ln -sf "$(command -v convserve-server-main)" /tmp/main_bin/convserve-server
  ln -sf "$(command -v convserve-echo-server-main)" /tmp/main_bin/convserve-echo-server
fi
stages() {  # stages VARIANT NAME [ECHO_FLAGS]
  (
    [ "$1" = a ] && export PATH=/tmp/main_bin:$PATH
    OUT=/tmp/sb_$2 LEVELS=1,64 COMMIT=srv_$1 ECHO_FLAGS=${3:-} \
      timeout 100 bash bench/batching/stage_breakdown.sh >/tmp/sb_$2.log 2>&1
  )
  echo "== $2 ($((SECONDS - T0))s)"
  tail -3 /tmp/sb_$2/summary.txt
  mkdir -p "$O/stages_$2"
  cp /tmp/sb_$2/summary.txt /tmp/sb_$2/results.json "$O/stages_$2/" 2>/dev/null
}
overhead() {  # overhead VARIANT NAME [ECHO_FLAGS]
  (
    [ "$1" = a ] && export PATH=/tmp/main_bin:$PATH
    OUT=/tmp/oh_$2 SKIP_GPU_TEST=1 LEVELS=1,64 ROUNDS=5 COMMIT=srv_$1 ECHO_FLAGS=${3:-} \
      timeout 130 bash bench/batching/run_h100.sh >/tmp/oh_$2.log 2>&1
  )
  echo "== overhead $2 ($((SECONDS - T0))s)"
  grep -E "^(echo_c|batched|eager|unbatched) |^c=|interleaved c=1" /tmp/oh_$2/summary.txt \
    2>/dev/null | tail -20
  mkdir -p "$O/overhead_$2"
  cp /tmp/oh_$2/summary.txt /tmp/oh_$2/results.json "$O/overhead_$2/" 2>/dev/null
}
# PART=final (about 2 minutes, a third call, on the landing tree's binaries, bundle zf): the GPU
# server test, one stage pass and issue 5's check on the landing server.
if [ "${PART:-}" = final ]; then
  server_test
  stages b final
  overhead b final
  device_end
  exit 0
fi
if [ "${PART:-}" = repeat ]; then
  overhead b b2
  device_save
  overhead a a2
  device_save
  overhead b b3_zero_copy_echo --zero_copy_forward
  device_end
  exit 0
fi
server_test
stages a a1
stages b b1
stages b b2
stages a a2
stages b b3_zero_copy_echo --zero_copy_forward
device_save
overhead b b
device_save
overhead a a
device_end
