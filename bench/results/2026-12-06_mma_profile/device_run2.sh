#!/usr/bin/env bash
# Run 2 (about a minute): the same pages for the TMA kind's best rows on two N = 1 layers
# (issue 8's N = 1 target), same bundle as run 1.
# device: carry [".gpu/pf.tar.xz"]: bash bench/results/2026-12-06_mma_profile/device_run2.sh
set -uo pipefail
(cd .gpu && tar -xJf pf.tar.xz)
. .gpu/pf/env.sh
NCU=l1_1x1_64to256:1:b128x64x64_w64x64_s6_wgmma_tma_persistent,l4_1x1_2048to512:1:b64x64x64_w64x64_s6_sk8_wgmma_tma \
  bash bench/conv/run_h100.sh source
