#!/usr/bin/env bash
# One device call (PREDICTION.md, here): the build with every unary hot method on completion
# queues (Forward, ModelInfer, the echo floor):
#   1. gpu_server_test;
#   2. the c = 64 sweep from the client's GPU memory (batching_check) with 8, 16 and 64 client
#      connections (8 is the load generator's default, 64 is one per caller, as 64 separate
#      clients would have), and at 64 connections with 8 queue threads instead of 16;
#   3. the c = 1 overhead with the tensors in the messages (server and echo floor carry the same
#      401 KB each way), five interleaved (echo, eager) rounds;
#   4. a perf profile of server and client during the batched c = 64 run
#      (../2026-12-07_cpu_profile/device_run.sh on this bundle).
# Bundle: gpu-bundle .gpu/qc convserve-server convserve-cli convserve-echo-server gpu_server_test
#   /usr/bin/perf -- tests/data; strip --strip-debug on the convserve binaries; tar | xz.
# device: carry [".gpu/qc.tar.xz"]:
#   COMMIT=<sha> bash bench/results/2026-12-07_queues_check/device_run.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin qc queues_check
server_test
for n in ${CONNECTION_LEVELS:-8 16 64}; do
  CONNECTIONS=$n batching_check "c64_conn$n" 64 cuda
done
# Fewer queue threads than cores: fewer wake-ups per burst, if the calls spread over enough
# connections to keep them busy.
CONNECTIONS=64 EXTRA_SERVER_FLAGS=--grpc_forward_threads=8 batching_check c64_conn64_q8 64 cuda
(
  OUT=/tmp/r_inband LEVELS=1 ROUNDS=5 DURATION_S=3 SKIP_GPU_TEST=1 \
    timeout 200 bash bench/batching/run_h100.sh >/tmp/r_inband.log 2>&1
)
echo "== inband c=1 ($((SECONDS - T0))s)"
grep -E "^c=1|^interleaved" /tmp/r_inband/summary.txt
mkdir -p "$O/inband_c1"
cp /tmp/r_inband/summary.txt /tmp/r_inband/results.json /tmp/r_inband/logs.tgz /tmp/r_inband.log \
  "$O/inband_c1/" 2>/dev/null
device_end
[ -n "${SKIP_PROFILE:-}" ] ||
  CONNECTIONS=${PROFILE_CONNECTIONS:-8} BUNDLE=qc bash bench/results/2026-12-07_cpu_profile/device_run.sh
