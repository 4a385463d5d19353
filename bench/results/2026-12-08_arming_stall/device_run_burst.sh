#!/usr/bin/env bash
# What is left of the sampler's cost: a lull, then a burst with no pause. The server (this tree,
# --occupancy_sample_interval=5s) gets a second of c = 1 traffic (a launch finds a sample due and
# asks for one), a 2 s pause (the worker arms in it), then open loop at RATE req/s for
# DURATION_S s with no 100 ms pause: the burst's first launch is sampled, and the worker, finding
# no pause to disarm in, disarms 10 s later into the traffic. Sides in SIDES order, each
# "interval:name". Bundle: device_run2.sh's.
# device: carry [".gpu/B.tar.xz"]: B=<bundle> COMMIT=<sha> bash bench/results/2026-12-08_arming_stall/device_run_burst.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${B:-ar}" arming_burst
. bench/lib/serving.sh
bench_workspace
DEVICE=cuda:0
DURATION_S=${DURATION_S:-20}
WARMUP_S=0
CONNECTIONS=8
CLIENT_FLAGS=
RATE=${RATE:-40000}
perf_limit=$((DURATION_S + 60))
target=127.0.0.1:50051
bench_eager_layer python3 "$work/demo" demo_conv3x3 "$work/repo" "$DEVICE" || exit 1
for side in ${SIDES:-5s:burst_1 0:off 5s:burst_2}; do
  interval=${side%%:*}
  name=${side#*:}
  lull_then_burst() {
    DURATION_S=1 perf "${name}_before" "$target" eager 1 --cuda_shared_memory=0 >/dev/null
    sleep 2
    curl -s http://127.0.0.1:50053/metrics >"$logs/metrics_${name}_before.txt" 2>/dev/null
    perf "$name" "$target" eager "" --rate="$RATE" --cuda_shared_memory=0
    curl -s http://127.0.0.1:50053/metrics >"$logs/metrics_$name.txt" 2>/dev/null
  }
  serve "server_$name" "$target" eager lull_then_burst \
    convserve-server --device="$DEVICE" --listen="$target" --metrics_listen=127.0.0.1:50053 \
    --state_dir="$work/state" --model_repository="$work/repo" --allow_shared_memory \
    --occupancy_sample_interval="$interval"
  grep -E "^convserve_kernel_achieved_occupancy" "$logs/metrics_$name.txt" | head -3
  cp "$work/perf_$name.json" "$O/" 2>/dev/null
  open_loop_summary "$name" "$interval"
  device_save
done
cp -r "$logs" "$O/logs"
device_end
