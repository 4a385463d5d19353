#!/usr/bin/env bash
# One device call (PREDICTION.md, here), batching_check at c = 64 (client GPU memory,
# 8 connections, batched / eager / unbatched) six times:
#   on_N:  the qc server (../2026-12-07_queues_check; 98b77c2's tree), occupancy sampler on (the
#          default: CUPTI attached, one launch profiled every 10 s);
#   off_N: the same server with --occupancy_sample_interval=0 (CUPTI never attached);
#   bl_N:  a878148's server (the request that fills a batch launches it), sampler on.
# Order on_1 bl_1 off_1 off_2 bl_2 on_2, so drift hits every side alike.
# Bundles: qc (server, CLI, echo server) and bl (a878148's convserve-server alone, same libraries:
#   ninja -C build-gpu convserve-server; copy to .gpu/bl/bin; strip --strip-debug; tar | xz).
# device: carry [".gpu/qc.tar.xz", ".gpu/bl.tar.xz"]:
#   COMMIT=<sha> bash bench/results/2026-12-07_sampler_tax/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
(cd .gpu && tar -xJf bl.tar.xz)
device_begin qc sampler_tax
base_path=$PATH
for side in ${SIDES:-on_1 bl_1 off_1 off_2 bl_2 on_2}; do
  flags=""
  PATH=$base_path
  case $side in
    off_*) flags=--occupancy_sample_interval=0 ;;
    bl_*) PATH=$PWD/.gpu/bl/bin:$base_path ;;
  esac
  echo "$side: $(command -v convserve-server) $flags"
  EXTRA_SERVER_FLAGS=$flags batching_check "$side" 64 cuda
done
PATH=$base_path
python3 bench/batching/stage_means.py $(for s in ${SIDES:-on_1 bl_1 off_1 off_2 bl_2 on_2}; do echo $O/$s; done) 2>&1 |
  tee "$O/stages.txt"
device_end
