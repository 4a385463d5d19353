#!/usr/bin/env bash
# Two device calls for PREDICTION.md (each bundle with the tracked tree must stay under 64 MiB,
# and every GPU binary carries the whole kernel table, ~11 MB compressed):
# - PART=kernels (about 6 minutes): the kernels test, memcheck on the changed kinds, main's
#   conv_bench against this branch's interleaved twice on every row, Nsight Compute on the
#   mma.sync family's worst N = 1 layer, then (unless CLOSING=0) the closing figures against
#   PyTorch's cuDNN.
# - PART=server (about 2 minutes): the GPU server test, then the staging copy's A/B:
#   stage_breakdown.sh on main's server and this branch's, two passes in opposite order.
# Built here for sm_90 (Release, -Werror); main's binaries from build-gpu before the branch, in
# /tmp/base-bin (conv_bench as conv_bench_main, convserve-server as convserve-server-main):
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test convserve-server \
#     convserve-cli convserve-echo-server
#   ../shared/tools/gpu-bundle .gpu/lm build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench /tmp/base-bin/conv_bench_main -- tests/data
#   ../shared/tools/gpu-bundle .gpu/ls build-gpu/tests/server/gpu_server_test \
#     build-gpu/server/convserve-server build-gpu/client/convserve-cli \
#     build-gpu/bench/echo/convserve-echo-server /tmp/base-bin/convserve-server-main -- tests/data
#   strip --strip-debug .gpu/l?/bin/*
#   (cd .gpu && for b in lm ls; do tar -cf - $b | xz -T2 -6 > $b.tar.xz; done)
# device: carry [".gpu/lm.tar.xz"]: PART=kernels bash bench/results/2026-12-06_loader_masks/device_run.sh
# device: carry [".gpu/ls.tar.xz"]: PART=server bash bench/results/2026-12-06_loader_masks/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
if [ "$PART" = kernels ]; then
device_begin lm lm1
kernel_tests || { device_end; exit 1; }
# The changed kinds on every coverage shape: mma.sync (small and large tiles, split), plain and
# warp-specialised wgmma.
memcheck_rows '*/b32x64x64_w16x32_s4:*/b128x128x64_w64x32_s3:*/b64x64x64_w32x32_s3_sk8:*/b64x64x64_w64x64_s6_wgmma:*/b128x64x64_w64x64_s6_wgmma_ws'
ab_rounds 2 conv_bench_main conv_bench
# The family's worst N = 1 layer on its best row, against the cold-path round's 1,910
# instructions per warp (bench/results/2026-12-06_cold_path, run 2).
NCU=l2_1x1_512to128:1:b32x64x64_w16x32_s4 OUT=$O/ncu timeout 100 bash bench/conv/run_h100.sh source
python3 bench/conv/sass_mix.py $O/ncu/l2_1x1_512to128_n1_b32x64x64_w16x32_s4.sass.csv.xz --loop \
  >$O/ncu/sass_mix.txt 2>&1
head -30 $O/ncu/sass_mix.txt
device_save
# CLOSING=0 leaves them out when device time is short.
[ "${CLOSING:-1}" != 0 ] && closing_figures
device_end
exit 0
fi

device_begin ls ls1
server_test
# The staging copy: main's server (a) and this branch's (b), a b b a.
for pass in 1 2; do
  order="a b"
  [ $pass = 2 ] && order="b a"
  for v in $order; do
    (
      # a: main's server, put first on PATH under its own name; b: this branch's.
      if [ $v = a ]; then
        mkdir -p /tmp/main_bin && ln -sf "$(command -v convserve-server-main)" /tmp/main_bin/convserve-server
        export PATH=/tmp/main_bin:$PATH
      fi
      OUT=/tmp/sb_${v}_$pass LEVELS=1,64 COMMIT=srv_$v \
        timeout 100 bash bench/batching/stage_breakdown.sh >/tmp/sb_${v}_$pass.log 2>&1
    )
    echo "== server $v pass $pass ($((SECONDS - T0))s)"
    tail -3 /tmp/sb_${v}_$pass/summary.txt
    mkdir -p "$O/staging_${v}_$pass"
    cp /tmp/sb_${v}_$pass/summary.txt "$O/staging_${v}_$pass/" 2>/dev/null
  done
done
device_end
