#!/usr/bin/env bash
# One device call for PREDICTION_graphs.md (about 2 minutes of command time). Built here:
#   nice ninja -C build-gpu convserve-server convserve-cli convserve-echo-server gpu_server_test
#   rm -rf .gpu/s5 .gpu/s5.tar.xz; ../shared/tools/gpu-bundle .gpu/s5 \
#     build-gpu/server/convserve-server build-gpu/client/convserve-cli \
#     build-gpu/bench/echo/convserve-echo-server build-gpu/tests/server/gpu_server_test -- tests/data
#   strip --strip-debug .gpu/s5/bin/*; (cd .gpu && tar -cf - s5 | xz -T2 -3 > s5.tar.xz)
# device: carry [".gpu/s5.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-06-stages-h100/device_run_graphs.sh
# gpu_server_test (both issue paths) first, then stage_breakdown.sh with --cuda_graphs=true and
# =false, two passes in opposite orders, at c = 1 and 64. $OUT gets the test log and summaries.
set -uo pipefail
T0=$SECONDS
(cd .gpu && tar -xJf s5.tar.xz)
. .gpu/s5/env.sh
export CONVSERVE_TEST_DATA=$PWD/.gpu/s5/data/data
mkdir -p "$OUT/test"
timeout 120 gpu_server_test --gtest_color=no >"$OUT/test/gpu_server_test.log" 2>&1
rc=$?
echo "gpu_server_test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]|OK \]" "$OUT/test/gpu_server_test.log" | head -6
[ $rc = 0 ] || exit 1
for pass in 1 2; do
  order="true false"
  [ $pass = 2 ] && order="false true"
  for graphs in $order; do
    OUT=/tmp/sb_${graphs}_$pass LEVELS=1,64 SERVER_FLAGS="--cuda_graphs=$graphs" \
      timeout 120 bash bench/batching/stage_breakdown.sh >/tmp/sb_${graphs}_$pass.log 2>&1
    echo "== cuda_graphs=$graphs pass $pass ($((SECONDS - T0))s)"
    tail -2 /tmp/sb_${graphs}_$pass/summary.txt
    mkdir -p "$OUT/graphs_${graphs}_$pass"
    cp /tmp/sb_${graphs}_$pass/summary.txt "$OUT/graphs_${graphs}_$pass/"
  done
done
