#!/usr/bin/env bash
# One device call (PREDICTION.md, here):
#   1. the new sampler's test and host-cost probe (this tree's occupancy_sampler_test and
#      occupancy_check);
#   2. batching_check at c = 1 and 64 from the client's GPU memory (8 connections) for
#        on_N:  the qc server (98b77c2's tree), sampler on (CUPTI attached from start-up),
#        off_N: the same with --occupancy_sample_interval=0,
#        bl_N:  a878148's server (HEAD before this change), sampler on,
#        dt_N:  this tree's server (CUPTI attached only around a sample), sampler on,
#      in the order on_1 bl_1 dt_1 off_1 dt_2 bl_2, so drift hits every side alike.
# One bundle, .gpu/cd.tar.xz (the three bundles apart pass the 64 MiB a call carries): the qc
# bundle of ../2026-12-07_queues_check without perf and gpu_server_test (its server in bin/),
# a878148's convserve-server in bl/, and this tree's convserve-server, occupancy_check and
# occupancy_sampler_test (build-gpu, strip --strip-debug) in dt/; `xz -9` with the three servers
# side by side in the tar, so they compress together (22 MB).
# device: carry [".gpu/cd.tar.xz"]:
#   COMMIT=<sha> bash bench/results/2026-12-07_cupti_detach/device_run.sh
# Run 2: REATTACH="none subscribe timestamp sleep" SIDES="bl_1 dt_1 dt_2 bl_2" (same bundle
# layout, dt/ rebuilt). Run 3: SIDES="bl_1 dt_1 dt_2 bl_2", dt/ also holds gpu_server_test.
set -uo pipefail
. bench/conv/device_steps.sh
device_begin cd cupti_detach
base_path=$PATH
dt=$PWD/.gpu/cd/dt

timeout 60 "$dt/occupancy_sampler_test" --gtest_color=no >"$O/occupancy_sampler_test.log" 2>&1
echo "occupancy_sampler_test rc=$? $((SECONDS - T0))s"
grep -E "sample host time|achieved|^\[  (PASSED|FAILED)|FAILED  \]" "$O/occupancy_sampler_test.log"
timeout 120 "$dt/occupancy_check" tax 1 64 56 56 64 3 3 1 1 >"$O/tax.txt" 2>&1
echo "occupancy_check tax rc=$? $((SECONDS - T0))s"
cat "$O/tax.txt"
# Run 2 on: which call brings the profiler back after cuptiFinalize (one process each).
if [ -n "${REATTACH:-}" ]; then
  for strategy in $REATTACH; do
    timeout 60 "$dt/occupancy_check" "reattach-$strategy" 1 64 56 56 64 3 3 1 1 \
      >"$O/reattach_$strategy.txt" 2>&1
    echo "reattach-$strategy rc=$? $((SECONDS - T0))s"
    grep -vE "^(problem|config) " "$O/reattach_$strategy.txt"
  done
fi
if [ -x "$dt/gpu_server_test" ]; then  # run 3 on (fits the bundle since xz -9)
  timeout 150 "$dt/gpu_server_test" --gtest_color=no >"$O/gpu_server_test.log" 2>&1
  echo "gpu_server_test rc=$? $((SECONDS - T0))s"
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" "$O/gpu_server_test.log" | head -4
fi
device_save

sides=${SIDES:-on_1 bl_1 dt_1 off_1 dt_2 bl_2}
for side in $sides; do
  flags=""
  PATH=$base_path
  case $side in
    off_*) flags=--occupancy_sample_interval=0 ;;
    bl_*) PATH=$PWD/.gpu/cd/bl:$base_path ;;
    dt_*) PATH=$dt:$base_path ;;
  esac
  echo "$side: $(command -v convserve-server) $flags"
  EXTRA_SERVER_FLAGS=$flags batching_check "$side" "${LEVELS:-1,64}" cuda
  tar -xzOf "/tmp/r_$side/logs.tgz" --wildcards '*server.log' 2>/dev/null |
    grep -iE "occupancy|cupti" | head -3
  tar -xzOf "/tmp/r_$side/logs.tgz" --wildcards '*metrics.txt' 2>/dev/null |
    grep -E "^convserve_(kernel_achieved_occupancy|occupancy_sampler_enabled)" | head -3
done
PATH=$base_path
python3 bench/batching/stage_means.py $(for s in $sides; do echo $O/$s; done) 2>&1 |
  tee "$O/stages.txt"
device_end
