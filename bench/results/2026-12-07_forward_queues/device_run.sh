#!/usr/bin/env bash
# One device call for PREDICTION.md (here): gpu_server_test with Forward on completion queues,
# then the c = 64 sweep from the client's GPU memory (batching_check, bench/conv/device_steps.sh)
# interleaved: new (16 queue threads, the default on 16 cores), base (HEAD's callback Forward),
# new with --grpc_forward_threads=8, new, base.
# Bundle: gpu-bundle .gpu/fq convserve-server convserve-cli convserve-echo-server gpu_server_test
#   -- tests/data; the base server (ab33c76) in .gpu/fq/alt_base/; strip --strip-debug; tar | xz.
# device: carry [".gpu/fq.tar.xz"]: bash bench/results/2026-12-07_forward_queues/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin fq forward_queues
server_test
bin_dir=$PATH
for side in ${SIDES:-new base new8 new base}; do
  n=1
  while [ -d "$O/${side}_$n" ]; do n=$((n + 1)); done
  case $side in
    new) PATH=$bin_dir COMMIT=${COMMIT:-new} batching_check "${side}_$n" 64 cuda ;;
    new8)
      PATH=$bin_dir COMMIT=${COMMIT:-new} EXTRA_SERVER_FLAGS=--grpc_forward_threads=8 \
        batching_check "${side}_$n" 64 cuda
      ;;
    base) PATH=$PWD/.gpu/fq/alt_base:$bin_dir COMMIT=ab33c76 batching_check "${side}_$n" 64 cuda ;;
  esac
done
device_end
