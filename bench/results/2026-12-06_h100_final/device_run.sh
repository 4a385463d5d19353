#!/usr/bin/env bash
# One device call for the session's closing figures (about 6 minutes): the whole kernels test,
# memcheck and racecheck on a subset, fp16 and bf16 against PyTorch's cuDNN at N = 32, 8, 1,
# the tuner benchmark and the GPU server test. Built here for sm_90 on main:
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench tuner_bench gpu_server_test
#   rm -rf .gpu/fin; ../shared/tools/gpu-bundle .gpu/fin build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/bench/tuner/tuner_bench \
#     build-gpu/tests/server/gpu_server_test -- tests/data
#   strip --strip-debug .gpu/fin/bin/*; (cd .gpu && tar -cf - fin | xz -T2 -3 > fin.tar.xz)
# device: carry [".gpu/fin.tar.xz"]: bash bench/results/2026-12-06_h100_final/device_run.sh
set -uo pipefail
# B names the bundle (default fin); an already unpacked one is used as it is.
B=${B:-fin}
[ -d .gpu/$B ] || (cd .gpu && tar -xJf $B.tar.xz)
. .gpu/$B/env.sh
D=$PWD/.gpu/$B/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/final
mkdir -p $O
T0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
timeout 120 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
echo "kernels test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -8
OUT=$O timeout 150 bash bench/conv/run_h100.sh sanitize
echo "sanitize $((SECONDS - T0))s"
timeout 60 gpu_server_test --gtest_color=no >$O/gpu_server_test.log 2>&1
echo "gpu_server_test rc=$? $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/gpu_server_test.log | head -4
torch_ref() {
  timeout 120 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
    --dtypes=fp16,bf16 --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
timeout 200 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16,bf16 --reps=25 \
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
timeout 90 tuner_bench --shapes=$D/resnet50.tsv --json=$O/tuner.json >$O/tuner.txt 2>&1
echo "tuner rc=$? $((SECONDS - T0))s"
tail -6 $O/tuner.txt
tar -czf $OUT/final.tgz -C $O .
echo "total $((SECONDS - T0))s"
