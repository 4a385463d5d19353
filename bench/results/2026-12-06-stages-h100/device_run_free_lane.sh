#!/usr/bin/env bash
# One device call for PREDICTION_free_lane.md (about 4 minutes). Two bundles built here, main's
# server as lane_a and the branch's as lane_b (each: convserve-server, convserve-cli,
# convserve-echo-server, gpu_server_test):
#   git checkout main && nice ninja -C build-gpu convserve-server convserve-cli \
#     convserve-echo-server gpu_server_test && ../shared/tools/gpu-bundle .gpu/lane_a <the four> -- tests/data
#   git checkout next/free-lane-early && (the same build) && ../shared/tools/gpu-bundle .gpu/lane_b ...
#   (cd .gpu && tar -cf - lane_a lane_b | xz -T2 -3 > lanes.tar.xz)
# device: carry [".gpu/lanes.tar.xz"]: bash bench/results/2026-12-06-stages-h100/device_run_free_lane.sh
set -uo pipefail
T0=$SECONDS
(cd .gpu && tar -xJf lanes.tar.xz)
(
  . .gpu/lane_b/env.sh
  export CONVSERVE_TEST_DATA=$PWD/.gpu/lane_b/data/data
  timeout 120 gpu_server_test --gtest_color=no >/tmp/gst.log 2>&1
  echo "gpu_server_test (branch) rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" /tmp/gst.log | head -6
)
for pass in 1 2; do
  order="a b"
  [ $pass = 2 ] && order="b a"
  for v in $order; do
    (
      . .gpu/lane_$v/env.sh
      OUT=/tmp/sb_${v}_$pass LEVELS=1,8,64 COMMIT=lane_$v \
        timeout 150 bash bench/batching/stage_breakdown.sh >/tmp/sb_${v}_$pass.log 2>&1
    )
    echo "== lane_$v pass $pass ($((SECONDS - T0))s)"
    tail -3 /tmp/sb_${v}_$pass/summary.txt
    mkdir -p "$OUT/lane_${v}_$pass"
    cp /tmp/sb_${v}_$pass/summary.txt "$OUT/lane_${v}_$pass/"
  done
done
