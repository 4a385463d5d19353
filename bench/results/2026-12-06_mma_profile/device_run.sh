#!/usr/bin/env bash
# One device call (about 2 minutes): Nsight Compute's source and details pages for the mma.sync
# family's worst layers, the N = 1 target's and N = 32's (issue 3). conv_bench built here for
# sm_90 (build-gpu at next/mma-sk2: main's kernels plus row 60, which is not profiled), bundled:
#   rm -rf .gpu/pf; ../shared/tools/gpu-bundle .gpu/pf build-gpu/bench/conv/conv_bench -- tests/data
#   strip --strip-debug .gpu/pf/bin/*; (cd .gpu && tar -cf - pf | xz -T2 -3 > pf.tar.xz)
# device: carry [".gpu/pf.tar.xz"]: bash bench/results/2026-12-06_mma_profile/device_run.sh
set -uo pipefail
(cd .gpu && tar -xJf pf.tar.xz)
. .gpu/pf/env.sh
NCU=l1_1x1_64to256:1:b64x64x32_w32x32_s4,l4_1x1_2048to512:1:b32x64x64_w32x32_s4_sk4,l4_1x1_2048to512:32:b128x128x64_w64x32_s3_sk4 \
  bash bench/conv/run_h100.sh source
