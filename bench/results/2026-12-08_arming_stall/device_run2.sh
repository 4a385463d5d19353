#!/usr/bin/env bash
# Run 2: the sampler that arms and disarms only in a pause of the launches (quiet period 100 ms),
# against the sampler of run 1 (4f25eb6, which arms into the traffic) and the sampler off:
# 1. occupancy_sampler_test (its server-path test now checks the pause);
# 2. sides in SIDES order, each "server:interval:name" (server bl = 4f25eb6's, dt = this tree's):
#    the eager demo layer, tensors in the client's GPU memory, 8 connections, open loop at RATE
#    req/s for DURATION_S s (the client sends from a thread per connection since 3014f0c); then a
#    pause of PAUSE_S (1) s and a second of c = 1 traffic, so that a sampler that waits for a
#    pause gets one, and the metrics page after it.
# Bundle .gpu/aq: as run 1's (the header of device_run.sh), from this tree, plus
#   mkdir .gpu/aq/bl; cp .gpu/as/bin/convserve-server .gpu/aq/bl/   (4f25eb6's server)
# device: carry [".gpu/aq.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-08_arming_stall/device_run2.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${B:-aq}" arming_stall2
timeout 120 occupancy_sampler_test --gtest_color=no >"$O/occupancy_sampler_test.log" 2>&1
echo "occupancy_sampler_test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]|armed .* after" "$O/occupancy_sampler_test.log" | head -6

. bench/lib/serving.sh
bench_workspace
DEVICE=cuda:0
DURATION_S=${DURATION_S:-20}
WARMUP_S=1
CONNECTIONS=8
CLIENT_FLAGS=
RATE=${RATE:-40000}
perf_limit=$((DURATION_S + 60))
target=127.0.0.1:50051
base_path=$PATH
bench_eager_layer python3 "$work/demo" demo_conv3x3 "$work/repo" "$DEVICE" || exit 1
for side in ${SIDES:-bl:5s:bl_1 dt:5s:dt_1 dt:0:off dt:5s:dt_2 bl:5s:bl_2}; do
  IFS=: read -r server interval name <<<"$side"
  PATH=$base_path
  [ "$server" = bl ] && PATH=$PWD/.gpu/${B:-aq}/bl:$base_path
  open_loop() {
    perf "$name" "$target" eager "" --rate="$RATE" --cuda_shared_memory=0
    sleep "${PAUSE_S:-1}"
    DURATION_S=1 WARMUP_S=0 perf "${name}_after" "$target" eager 1 --cuda_shared_memory=0 >/dev/null
    sleep 0.5
    curl -s http://127.0.0.1:50053/metrics >"$logs/metrics_$name.txt" 2>/dev/null
  }
  echo "$name: $(command -v convserve-server) --occupancy_sample_interval=$interval"
  serve "server_$name" "$target" eager open_loop \
    convserve-server --device="$DEVICE" --listen="$target" --metrics_listen=127.0.0.1:50053 \
    --state_dir="$work/state" --model_repository="$work/repo" --allow_shared_memory \
    --occupancy_sample_interval="$interval"
  grep -E "^convserve_(kernel_achieved_occupancy|occupancy_sampler_enabled)" \
    "$logs/metrics_$name.txt" | head -4
  grep -E "occupancy sampler" "$logs/server_$name.log" | head -2
  cp "$work/perf_$name.json" "$O/" 2>/dev/null
  open_loop_summary "$name" "$interval"
  device_save
done
PATH=$base_path
cp -r "$logs" "$O/logs"
device_end
