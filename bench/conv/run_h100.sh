#!/usr/bin/env bash
# Runs the kernel proof on the lent GPU from a gpu-bundle (see docs/kernels.md):
#   . .gpu/b/env.sh; bash bench/conv/run_h100.sh quick|full|sanitize|hopper|source
# hopper: memcheck and racecheck on the Hopper kinds (one row of each), then Nsight Compute on
# the shapes in $NCU (comma list of shape:N:config, e.g. l4_3x3_512:32:b64x128x64_w64x128_s6_wgmma_tma).
# source: for each $NCU item, where the warps stall instruction by instruction: Nsight Compute's
# source page (SASS, with stall samples per instruction) as CSV, xz-compressed, and its details
# page (a few files per item, so the device tool brings them all back; about 30 s an item).
# Logs and JSON go to $OUT (the device tool brings them back).
set -uo pipefail
mode=${1:-quick}
out=${OUT:-/tmp/out}
data=$(dirname "$(command -v conv_bench)")/../data/data
mkdir -p "$out"
export CONVSERVE_TEST_DATA=$data
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv >"$out/env.txt" 2>&1
case $mode in
  quick)
    conv_kernels_gpu_test --gtest_color=no >"$out/test.log" 2>&1
    echo "test rc=$?"
    grep -E "^\[ (error|tune|  FAILED|  PASSED) " "$out/test.log" | sort -u | tail -80
    grep -E "Failure|rel L2|Expected" "$out/test.log" | head -20
    conv_bench --shapes="$data/resnet50.tsv" --batches=1,32 --dtypes=fp16 --reps=10 \
      --json="$out/bench_quick.json" | tee "$out/bench_quick.txt"
    ;;
  full)
    conv_kernels_gpu_test --gtest_color=no >"$out/test.log" 2>&1
    echo "test rc=$?"
    grep -E "^\[ (error|tune|resources) |FAILED|PASSED" "$out/test.log" | tail -30
    conv_bench --shapes="$data/resnet50.tsv" --batches=1,8,32 --dtypes=fp16,bf16,fp32 --reps=25 \
      --json="$out/bench_full.json" >"$out/bench_full.txt" 2>&1
    echo "bench rc=$?"
    grep -E "^#|^(fp|bf)" "$out/bench_full.txt"
    grep -E " fp16 " "$out/bench_full.txt"
    python3 "$(dirname "$0")/torch_cudnn_reference.py" "$data/resnet50.tsv" --batches=1,8,32 \
      --dtypes=fp16 --json="$out/torch_cudnn.json" >"$out/torch_cudnn.txt" 2>&1
    echo "torch rc=$?"; tail -62 "$out/torch_cudnn.txt" | awk '{print $1, $2, $4, $5}' | paste -sd' ' | fold -w 3000
    ;;
  sanitize)
    subset='*b64x64x32_w32x32_s4:*b128x256x32_w64x64_s3:*b64x64x64_w32x32_s3_sk2:*b64x64x32_w32x32_s3_fewch:*b64x64x32_w32x16_s3_simt:*b256_dw'
    compute-sanitizer --tool memcheck --error-exitcode 7 conv_kernels_gpu_test --gtest_color=no \
      --gtest_filter="$subset" >"$out/memcheck.log" 2>&1
    echo "memcheck rc=$?"; tail -3 "$out/memcheck.log"
    one='*b64x64x32_w32x32_s4:*b64x64x32_w32x32_s3_fewch:*b64x64x32_w32x16_s3_simt:*b128_dw:*b64x64x64_w32x32_s3_sk2'
    compute-sanitizer --tool racecheck --error-exitcode 7 conv_kernels_gpu_test --gtest_color=no \
      --gtest_filter="$one" >"$out/racecheck.log" 2>&1
    echo "racecheck rc=$?"; tail -3 "$out/racecheck.log"
    ;;
  hopper)
    rows='*b128x128x64_w64x128_s6_wgmma_tma:*b64x128x64_w64x128_s4_wgmma_tma:*b128x128x64_w64x128_s6_sk2_wgmma_tma:*b128x128x64_w64x128_s4_wgmma_ws:*b64x64x64_w64x64_s6_wgmma'
    compute-sanitizer --tool memcheck --error-exitcode 7 conv_kernels_gpu_test --gtest_color=no \
      --gtest_filter="$rows" >"$out/memcheck.log" 2>&1
    echo "memcheck rc=$?"; tail -3 "$out/memcheck.log"
    compute-sanitizer --tool racecheck --error-exitcode 7 conv_kernels_gpu_test --gtest_color=no \
      --gtest_filter="$rows" >"$out/racecheck.log" 2>&1
    echo "racecheck rc=$?"; tail -3 "$out/racecheck.log"
    for item in ${NCU//,/ }; do
      IFS=: read -r shape batch config <<<"$item"
      { grep "^#" "$data/resnet50.tsv"; grep -P "^$shape\t" "$data/resnet50.tsv"; } >"$out/ncu_shape.tsv"
      ncu --section SpeedOfLight --section Occupancy --section SchedulerStats \
        --section WarpStateStats --section MemoryWorkloadAnalysis --launch-skip 2 --launch-count 1 \
        --kernel-name regex:Conv conv_bench --shapes="$out/ncu_shape.tsv" --batches="$batch" \
        --dtypes=fp16 --reps=3 --configs="$config" --no-cudnn >"$out/ncu_${shape}_n$batch.txt" 2>&1
      echo "ncu $shape N=$batch rc=$?"
      grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|No Eligible|Issued Warp|Registers Per" \
        "$out/ncu_${shape}_n$batch.txt" | head -12
    done
    rm -f "$out/ncu_shape.tsv"
    ;;
  source)
    for item in ${NCU//,/ }; do
      IFS=: read -r shape batch config <<<"$item"
      name=${shape}_n${batch}_$config
      { grep "^#" "$data/resnet50.tsv"; grep -P "^$shape\t" "$data/resnet50.tsv"; } >/tmp/ncu_shape.tsv
      ncu --section SourceCounters --section WarpStateStats --section SpeedOfLight \
        --section InstructionStats --section Occupancy --launch-skip 2 --launch-count 1 \
        --kernel-name regex:Conv -o "/tmp/$name" -f conv_bench --shapes=/tmp/ncu_shape.tsv \
        --batches="$batch" --dtypes=fp16 --reps=3 --configs="$config" --no-cudnn \
        >"/tmp/$name.log" 2>&1
      echo "ncu $name rc=$?"
      ncu -i "/tmp/$name.ncu-rep" --page details >"$out/$name.details.txt" 2>&1
      # (--print-source is newer than some ncu versions; without it the source page is SASS.)
      ncu -i "/tmp/$name.ncu-rep" --page source --csv --print-source sass >/tmp/source.csv 2>&1 ||
        ncu -i "/tmp/$name.ncu-rep" --page source --csv >/tmp/source.csv 2>&1
      xz -6 </tmp/source.csv >"$out/$name.sass.csv.xz"
      grep -E "Duration|Achieved Occupancy|No Eligible|Issued Warp|Executed Ipc" \
        "$out/$name.details.txt" | head -8
    done
    ;;
esac
