#!/usr/bin/env bash
# Run 2 (about 2 minutes), the closing figures of what main ships after the merge (cdfa9fa's
# kernels, the run-1 bundle): fp16 and bf16, all rows, against PyTorch's cuDNN before and after.
# device: carry [".gpu/fd.tar.xz"]: bash bench/results/2026-12-06_fast_divmod/device_run2.sh
set -uo pipefail
(cd .gpu && tar -xJf fd.tar.xz)
. .gpu/fd/env.sh
D=$PWD/.gpu/fd/data/data
O=/tmp/fd2
mkdir -p $O
T0=$SECONDS
torch_ref() {
  timeout 120 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
    --dtypes=fp16,bf16 --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
timeout 220 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16,bf16 --reps=25 \
  --json=$O/bench.json >$O/bench.txt 2>&1
echo "bench rc=$? $((SECONDS - T0))s"
grep "launch floor" $O/bench.txt
torch_ref after
for dtype in fp16 bf16; do
  for family in all mma; do
    python3 bench/conv/summarize.py $O/bench.json $O/torch_before.json $O/torch_after.json \
      --dtype=$dtype --family=$family >$O/summary_${dtype}_$family.md 2>&1
    echo "summary_${dtype}_$family.md:"
    tail -3 $O/summary_${dtype}_$family.md
  done
done
tar -czf $OUT/fd2.tgz -C $O .
echo "total $((SECONDS - T0))s"
