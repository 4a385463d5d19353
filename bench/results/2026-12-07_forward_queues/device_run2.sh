#!/usr/bin/env bash
# Runs 2 and 3 (PREDICTION2.md): the same server (queues), the load generator's old (callback)
# and new (completion-queue, commit 317678c, reverted after these runs) builds interleaved.
# Bundle: gpu-bundle .gpu/fc convserve-server convserve-cli convserve-echo-server -- tests/data;
#   the old convserve-cli (6a165c4) in .gpu/fc/alt_oldcli/; strip --strip-debug; tar | xz.
# device: carry [".gpu/fc.tar.xz"]: bash bench/results/2026-12-07_forward_queues/device_run2.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin fc forward_queues2
bin_dir=$PATH
for side in ${SIDES:-newcli oldcli newcli oldcli}; do
  n=1
  while [ -d "$O/${side}_$n" ]; do n=$((n + 1)); done
  case $side in
    newcli) PATH=$bin_dir COMMIT=${COMMIT:-new} batching_check "${side}_$n" 64 cuda ;;
    oldcli) PATH=$PWD/.gpu/fc/alt_oldcli:$bin_dir COMMIT=${COMMIT:-new}+cli6a165c4 \
      batching_check "${side}_$n" 64 cuda ;;
  esac
done
device_end
