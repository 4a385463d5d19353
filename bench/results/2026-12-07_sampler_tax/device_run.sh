#!/usr/bin/env bash
# One device call (PREDICTION.md, here): what the CUPTI occupancy sampler costs the c = 64
# sweep on the current build. batching_check (client GPU memory, 8 connections, batched / eager
# / unbatched) with the sampler on (the default, one launch every 10 s) and off
# (--occupancy_sample_interval=0), in the order on, off, off, on so that drift hits both alike.
# Bundle: the one of ../2026-12-07_queues_check (qc, built at 98b77c2's tree).
# device: carry [".gpu/qc.tar.xz"]: COMMIT=<sha> bash bench/results/2026-12-07_sampler_tax/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin qc sampler_tax
for side in on_1 off_1 off_2 on_2; do
  flags=""
  [ "${side%_*}" = off ] && flags=--occupancy_sample_interval=0
  EXTRA_SERVER_FLAGS=$flags batching_check "$side" 64 cuda
done
python3 bench/batching/stage_means.py $O/on_1 $O/off_1 $O/off_2 $O/on_2 2>&1 | tee "$O/stages.txt"
device_end
