#!/usr/bin/env bash
# What arming and disarming an occupancy sample cost the server's other CUDA calls, in one call:
# 1. `occupancy_check stall` twice: four lanes launch the demo layer's kernel and wait, as the
#    executor's lanes do, while the sampler takes a sample a second; per CUPTI step, its time
#    and the longest lane iteration that overlapped it.
# 2. The server at its default --occupancy_sample_interval (10s) against 0 (off), sides in
#    SIDES order (each "interval:name"): the eager demo layer, tensors in the client's GPU memory,
#    8 connections, open loop at RATE req/s for DURATION_S s, so a stall shows in the latency of
#    every request due during it (closed loop would only delay the 64 in flight).
# Bundle .gpu/as (built here for sm_90, Release, -Werror, strip --strip-debug):
#   ../shared/tools/gpu-bundle .gpu/as build-gpu/server/convserve-server \
#     build-gpu/client/convserve-cli build-gpu/bench/occupancy/occupancy_check \
#     build-gpu/tests/metrics/occupancy_sampler_test build-gpu/tests/server/gpu_server_test \
#     -- tests/data
#   (cd .gpu && tar -cf - as | xz -T2 -9 > as.tar.xz)
# device: carry [".gpu/as.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-08_arming_stall/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${B:-as}" arming_stall
for i in 1 2; do
  timeout 60 occupancy_check stall 1 64 56 56 64 3 3 1 1 >"$O/stall_$i.txt" 2>&1
  echo "stall $i rc=$? $((SECONDS - T0))s"
  grep -E "^stall: (step|[0-9]+ lanes|sampled)" "$O/stall_$i.txt" | head -40
done
device_save
[ -n "${SKIP_TESTS:-}" ] || {
  timeout 120 occupancy_sampler_test --gtest_color=no >"$O/occupancy_sampler_test.log" 2>&1
  echo "occupancy_sampler_test rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" "$O/occupancy_sampler_test.log" | head -4
}

. bench/lib/serving.sh
bench_workspace
DEVICE=${DEVICE:-cuda:0}
DURATION_S=${DURATION_S:-24}
WARMUP_S=1
CONNECTIONS=8
CLIENT_FLAGS=
RATE=${RATE:-40000}
perf_limit=$((DURATION_S + 60))
target=127.0.0.1:50051
bench_eager_layer python3 "$work/demo" demo_conv3x3 "$work/repo" "$DEVICE" || exit 1
for side in ${SIDES:-10s:on_1 0:off_1 10s:on_2 0:off_2}; do
  interval=${side%%:*}
  name=${side#*:}
  open_loop() {
    perf "$name" "$target" eager "" --rate="$RATE" ${PERF_TENSORS:---cuda_shared_memory=0}
    curl -s http://127.0.0.1:50053/metrics >"$logs/metrics_$name.txt" 2>/dev/null
  }
  serve "server_$name" "$target" eager open_loop \
    convserve-server --device="$DEVICE" --listen="$target" --metrics_listen=127.0.0.1:50053 \
    --state_dir="$work/state" --model_repository="$work/repo" --allow_shared_memory \
    --occupancy_sample_interval="$interval"
  grep -E "^convserve_(kernel_achieved_occupancy|occupancy_sampler_enabled)" \
    "$logs/metrics_$name.txt" | head -3
  cp "$work/perf_$name.json" "$O/" 2>/dev/null
  open_loop_summary "$name" "$interval"
  device_save
done
cp -r "$logs" "$O/logs"
device_end
