#!/usr/bin/env bash
# Run 2 (about 90 s): what bounds the 3x3 layers at N = 32 once every SM has work. Nsight
# Compute on l3_3x3_256 with the 128 x 128 persistent row (98 blocks) and its stream-K twin
# (132 blocks), and on l4_3x3_512 with the fastest row (64 x 128, cluster split-K 2). Same bundle
# as run 1 (.gpu/sk, branch next/stream-k).
# device: carry [".gpu/sk.tar.xz"]: bash bench/results/2026-12-06_stream_k/device_run2.sh
set -uo pipefail
B=${B:-sk}
[ -d .gpu/$B ] || (cd .gpu && tar -xJf $B.tar.xz)
. .gpu/$B/env.sh
D=$PWD/.gpu/$B/data/data
O=/tmp/sk2
mkdir -p $O
T0=$SECONDS
for item in l3_3x3_256:b128x128x64_w64x128_s5_wgmma_tma_persistent \
  l3_3x3_256:b128x128x64_w64x128_s5_wgmma_tma_streamk \
  l4_3x3_512:b64x128x64_w64x128_s4_sk2_wgmma_tma; do
  IFS=: read -r shape config <<<"$item"
  { grep "^#" $D/resnet50.tsv; grep -P "^$shape\t" $D/resnet50.tsv; } >/tmp/ncu_shape.tsv
  timeout 60 ncu --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section LaunchStats \
    --metrics lts__t_bytes.sum.per_second,lts__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__m_xbar2l1tex_read_bytes.sum.per_second,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
    --launch-skip 2 --launch-count 1 --kernel-name regex:Conv \
    conv_bench --shapes=/tmp/ncu_shape.tsv --batches=32 --dtypes=fp16 --reps=3 \
    --configs=$config --no-cudnn >$O/ncu_${shape}_$config.txt 2>&1
  echo "ncu $shape $config rc=$? $((SECONDS - T0))s"
  grep -E "Duration|Grid Size|L2 Cache Throughput|lts__t_bytes|lts__throughput|xbar2l1tex|gmma|DRAM Throughput|Compute \(SM\)" \
    $O/ncu_${shape}_$config.txt | head -12
done
tar -czf $OUT/sk2.tgz -C $O .
echo "total $((SECONDS - T0))s"
