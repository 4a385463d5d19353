#!/usr/bin/env bash
# Run 2 (about 60 s): main's conv_bench and this branch's, interleaved old, new, old, new on the
# mma.sync rows (fp16, N = 32, 8, 1, no cuDNN), so both see the same clocks and heat: run 1 ran
# them once each, main's first, and even the unchanged unsplit rows read 3-13% slower in the
# second. Same bundle as run 1.
# device: carry [".gpu/mc.tar.xz"]: bash bench/results/2026-12-06_mma_cluster_split/device_run2.sh
set -uo pipefail
B=${B:-mc}
[ -d .gpu/$B ] || (cd .gpu && tar -xJf $B.tar.xz)
. .gpu/$B/env.sh
D=$PWD/.gpu/$B/data/data
O=/tmp/mc2
mkdir -p $O
T0=$SECONDS
MMA=b128x128x32_w64x32_s4,b128x128x32_w64x64_s4,b128x128x64_w64x32_s3,b128x128x64_w64x32_s3_sk4
MMA=$MMA,b128x128x64_w64x64_s3,b128x256x32_w64x64_s3,b128x64x32_w64x32_s3_fewch,b128x64x32_w64x32_s4
MMA=$MMA,b256x128x32_w64x64_s3,b32x64x64_w32x32_s4,b32x64x64_w32x32_s4_sk4,b32x64x64_w32x32_s7
MMA=$MMA,b64x128x32_w32x64_s4,b64x128x32_w32x64_s4_sk8,b64x64x32_w32x32_s3_fewch,b64x64x32_w32x32_s4
MMA=$MMA,b64x64x64_w32x32_s3,b64x64x64_w32x32_s3_sk2,b64x64x64_w32x32_s3_sk4,b64x64x64_w32x32_s3_sk8
MMA=$MMA,b64x64x64_w32x32_s5
for round in 1 2; do
  for which in old new; do
    bin=conv_bench; [ $which = old ] && bin=conv_bench_old
    timeout 60 $bin --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
      --configs=$MMA --no-cudnn --json=$O/bench_${which}_$round.json >$O/bench_${which}_$round.txt 2>&1
    echo "$which round $round rc=$? $((SECONDS - T0))s"
    nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader
  done
done
tar -czf $OUT/mc2.tgz -C $O .
echo "total $((SECONDS - T0))s"
