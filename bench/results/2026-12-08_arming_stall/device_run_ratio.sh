#!/usr/bin/env bash
# Issue 5's c = 64 figure with the sampler at its defaults: batching_check (echo floor, then
# batched / eager / unbatched at c = 64, tensors in the client's GPU memory, 8 connections) for
#   dt_N: this tree's server (a sample a minute at most, armed only in a 100 ms lull),
#   bl_N: 4f25eb6's (a sample every 10 s, armed into the traffic),
# in SIDES order (dt_1 bl_1 dt_2 bl_2). Bundle: device_run2.sh's, plus
# build-gpu/bench/echo/convserve-echo-server.
# device: carry [".gpu/B.tar.xz"]: B=<bundle> COMMIT=<sha> bash bench/results/2026-12-08_arming_stall/device_run_ratio.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${B:-ar}" arming_ratio
base_path=$PATH
for side in ${SIDES:-dt_1 bl_1 dt_2 bl_2}; do
  PATH=$base_path
  case $side in bl_*) PATH=$PWD/.gpu/${B:-ar}/bl:$base_path ;; esac
  echo "$side: $(command -v convserve-server)"
  batching_check "$side" 64 cuda
  sampler_metrics "$side"
done
PATH=$base_path
stage_means ${SIDES:-dt_1 bl_1 dt_2 bl_2}
device_end
