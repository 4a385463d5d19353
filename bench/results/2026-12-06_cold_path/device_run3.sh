#!/usr/bin/env bash
# Run 3 (about 3 minutes): the tree that lands (rows 63-64 dropped, table 63 rows), on its own:
# the whole kernels test, the GPU server test, the closing figures against PyTorch's cuDNN and
# issue 3's Triton reference. Built here for sm_90 (Release, -Werror):
#   ninja -C build-gpu conv_kernels_gpu_test conv_bench gpu_server_test
#   rm -rf .gpu/fin; ../shared/tools/gpu-bundle .gpu/fin build-gpu/tests/kernels_gpu/conv_kernels_gpu_test \
#     build-gpu/bench/conv/conv_bench build-gpu/tests/server/gpu_server_test -- tests/data
#   strip --strip-debug .gpu/fin/bin/*; (cd .gpu && tar -cf - fin | xz -T2 -9 > fin.tar.xz)
# device: carry [".gpu/fin.tar.xz"]: bash bench/results/2026-12-06_cold_path/device_run3.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin fin fin
kernel_tests || { device_end; exit 1; }
server_test
closing_figures
timeout 200 python3 bench/conv/triton_reference.py $D/resnet50.tsv --batches=32 \
  --json=$O/triton.json --ours=$O/bench.json --dtype=fp16 --family=mma >$O/triton_mma.md 2>&1
echo "triton rc=$? $((SECONDS - T0))s"
tail -2 $O/triton_mma.md
device_end
