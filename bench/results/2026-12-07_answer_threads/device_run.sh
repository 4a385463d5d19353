#!/usr/bin/env bash
# One device call for PREDICTION.md (here): the c = 64 sweep from the client's GPU memory with
# three servers, interleaved dl, A, B, B, A, dl.
# Bundle (built for sm_90, -Werror): gpu-bundle .gpu/ab with B's convserve-server (8 answer
# threads), convserve-cli and convserve-echo-server; then A's server (67c5fab) in
# .gpu/ab/alt_wake/ and dl's (f754802) in .gpu/ab/alt_dl/; strip --strip-debug; tar | xz.
# device: carry [".gpu/ab.tar.xz"]: bash bench/results/2026-12-07_answer_threads/device_run.sh
# SIDES: the order (default "dl wake ans8 ans8 wake dl"; about 25 s each).
set -uo pipefail
. bench/conv/device_steps.sh
device_begin ab answer_threads
bin_dir=$PATH
for side in ${SIDES:-dl wake ans8 ans8 wake dl}; do
  case $side in
    dl) path=$PWD/.gpu/ab/alt_dl:$bin_dir commit=f754802 ;;
    wake) path=$PWD/.gpu/ab/alt_wake:$bin_dir commit=67c5fab ;;
    ans8) path=$bin_dir commit=67c5fab+answer8 ;;
  esac
  n=1
  while [ -d "$O/${side}_$n" ]; do n=$((n + 1)); done
  PATH=$path COMMIT=$commit batching_check "${side}_$n" 64 cuda
done
device_end
