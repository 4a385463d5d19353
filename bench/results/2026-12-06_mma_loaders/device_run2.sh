#!/usr/bin/env bash
# One device call for PREDICTION_run2.md (about 4 minutes). Built here for sm_90 (this tree):
#   nice ninja -C build-gpu conv_kernels_gpu_test conv_bench
#   rm -rf .gpu/ld2; ../shared/tools/gpu-bundle .gpu/ld2 \
#     build-gpu/tests/kernels_gpu/conv_kernels_gpu_test build-gpu/bench/conv/conv_bench -- tests/data
#   strip --strip-debug .gpu/ld2/bin/*; (cd .gpu && tar -cf - ld2 | xz -T2 -3 > ld2.tar.xz)
#   old: .gpu/ld_old.tar.xz, run 1's conv_bench (bundle dir ld).
# device: carry [".gpu/ld2.tar.xz", ".gpu/ld_old.tar.xz"]: bash bench/results/2026-12-06_mma_loaders/device_run2.sh
set -uo pipefail
(cd .gpu && tar -xJf ld2.tar.xz && tar -xJf ld_old.tar.xz)
D=$PWD/.gpu/ld2/data/data
export CONVSERVE_TEST_DATA=$D
O=/tmp/o
mkdir -p $O
T0=$SECONDS
new() { PATH=$PWD/.gpu/ld2/bin:$PATH LD_LIBRARY_PATH=$PWD/.gpu/ld2/lib:${LD_LIBRARY_PATH:-} "$@"; }
old() { PATH=$PWD/.gpu/ld/bin:$PATH LD_LIBRARY_PATH=$PWD/.gpu/ld/lib:${LD_LIBRARY_PATH:-} "$@"; }
. .gpu/ld2/env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >$O/env.txt 2>&1
new timeout 120 conv_kernels_gpu_test --gtest_color=no >$O/kernels_test.log 2>&1
rc=$?
echo "kernels test rc=$rc $((SECONDS - T0))s"
grep -E "^\[  (PASSED|FAILED)|FAILED  \]" $O/kernels_test.log | head -8
grep -E "resources.*b(32x64x64_w32x32_s7|64x64x64_w32x32_s5|128x128x64_w64x32_s3) " $O/kernels_test.log | head -6
if [ $rc != 0 ]; then tar -czf $OUT/out.tgz -C $O .; exit 1; fi
new timeout 120 compute-sanitizer --tool memcheck conv_kernels_gpu_test \
  '--gtest_filter=*/b32x64x64_w32x32_s7:*/b64x64x64_w32x32_s5' >$O/memcheck.log 2>&1
echo "memcheck rc=$? $((SECONDS - T0))s"
grep -E "ERROR SUMMARY" $O/memcheck.log | tail -1
torch_ref() {
  timeout 90 python3 bench/conv/torch_cudnn_reference.py $D/resnet50.tsv --batches=32,8,1 \
    --dtypes=fp16 --json=$O/torch_$1.json >$O/torch_$1.txt 2>&1
  echo "torch $1 rc=$? $((SECONDS - T0))s"
}
torch_ref before
for v in new old; do
  $v timeout 150 conv_bench --shapes=$D/resnet50.tsv --batches=32,8,1 --dtypes=fp16 --reps=25 \
    --json=$O/bench_$v.json >$O/bench_$v.txt 2>&1
  echo "bench $v rc=$? $((SECONDS - T0))s"
done
torch_ref after
for v in new old; do
  for family in mma all; do
    python3 bench/conv/summarize.py $O/bench_$v.json $O/torch_before.json $O/torch_after.json \
      --dtype=fp16 --family=$family >$O/summary_${v}_$family.md 2>&1
    echo "summary_${v}_$family.md:"
    tail -3 $O/summary_${v}_$family.md
  done
done
tar -czf $OUT/out.tgz -C $O .
new env NCU=l3_3x3_256:32:b128x128x64_w64x32_s3 timeout 100 bash bench/conv/run_h100.sh source
python3 bench/conv/sass_mix.py $OUT/*.sass.csv.xz | tail -1
echo "total $((SECONDS - T0))s"
