#!/usr/bin/env bash
# The server with a sample every second (--occupancy_sample_interval=1s), so a 3 s check sees
# about three: batching_check at c = 1 and 64 from the client's GPU memory (8 connections) for
#   bl_N: 367a066's server (run 3 of ../2026-12-07_cupti_detach; the sampled launch starts the
#         profiler's pass with every lane held),
#   dt_N: this tree's (the worker starts the pass when arming),
# in the order bl_1 dt_1 dt_2 bl_2. Prints each variant's max latency and the executor stages.
# Bundle .gpu/sv (built here for sm_90, Release, -Werror, strip --strip-debug):
#   ../shared/tools/gpu-bundle .gpu/sv build-gpu/server/convserve-server \
#     build-gpu/client/convserve-cli build-gpu/bench/echo/convserve-echo-server -- tests/data
#   mkdir .gpu/sv/bl; cp <367a066's convserve-server> .gpu/sv/bl/
#   (cd .gpu && tar -cf - sv | xz -T2 -9 > sv.tar.xz)
# device: carry [".gpu/sv.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-07_range_start/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${B:-sv}" range_start
base_path=$PATH
sides=${SIDES:-bl_1 dt_1 dt_2 bl_2}
for side in $sides; do
  PATH=$base_path
  case $side in
    bl_*) PATH=$PWD/.gpu/${B:-sv}/bl:$base_path ;;
  esac
  echo "$side: $(command -v convserve-server)"
  EXTRA_SERVER_FLAGS=--occupancy_sample_interval=1s batching_check "$side" "${LEVELS:-1,64}" cuda
  python3 - "/tmp/r_$side/results.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for v in ("batched", "eager", "unbatched"):
    for row in d.get(v, []):
        lat = row["latency_us"]
        print(f"  {v:9s} c={row['load']:<3d} req/s {row['throughput_rps']:>8.0f}  p99 {lat['p99']:>8.0f}"
              f"  max {lat['max']:>9.0f} us")
PY
  sampler_metrics "$side"
done
PATH=$base_path
stage_means $sides
device_end
