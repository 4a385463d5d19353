#!/usr/bin/env bash
# Batching proof on the lent GPU, from a gpu-bundle holding convserve-server, convserve-cli,
# convserve-echo-server and gpu_server_test (see NOTES.md for how it is built and sent):
#   . .gpu/b/env.sh; bash bench/batching/run_h100.sh
# Serves the 1x64x56x56 FP16 3x3 layer three times, as "batched" (max_batch_size 32, 500 us
# delay), "eager" (the same plus preferred batch size 1) and "unbatched" (max_batch_size 1),
# sweeps closed-loop concurrency 1..128 on each with `convserve-cli perf`, then measures the
# echo server (same bytes, no GPU work) at concurrency 1 as the transport floor. Logs and JSON
# go to $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
work=$(mktemp -d)
SERVER_FLAGS=${SERVER_FLAGS:-}
levels=${LEVELS:-1,2,4,8,16,32,64,128}
duration=${DURATION_S:-3}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv >"$out/env.txt" 2>&1
nproc >>"$out/env.txt"

echo "== gpu_server_test"
[ -z "${SKIP_GPU_TEST:-}" ] && gpu_server_test --gtest_color=no >"$out/gpu_server_test.log" 2>&1
echo "gpu_server_test rc=$?"
grep -E "^\[  (FAILED|PASSED|  OK|SKIPPED) |Failure|Expected|Which" "$out/gpu_server_test.log" | head -20

# The benchmark layer from the demo repository, under two names with different batching.
python3 scripts/make-demo-repository.py "$work/demo" >/dev/null || exit 1
mkdir -p "$work/repo"
for name in batched eager unbatched; do
  cp -r "$work/demo/demo_conv3x3" "$work/repo/$name"
  sed -i "s/^name: .*/name: \"$name\"/" "$work/repo/$name/config.pbtxt"
done
echo 'batching { max_batch_size: 32 max_queue_delay_us: 500 }' >>"$work/repo/batched/config.pbtxt"
echo 'batching { max_batch_size: 1 }' >>"$work/repo/unbatched/config.pbtxt"
# Preferred size 1: a lone request launches at once; under load requests still gather while
# every executor lane is busy.
echo 'batching { max_batch_size: 32 max_queue_delay_us: 500 preferred_batch_sizes: 1 }' \
  >>"$work/repo/eager/config.pbtxt"
cat "$work/repo/batched/config.pbtxt" >"$out/layer_config.txt"

convserve-server --device=cuda:0 --listen=127.0.0.1:50051 --metrics_listen=127.0.0.1:9464 \
  --state_dir="$work/state" --model_repository="$work/repo" $SERVER_FLAGS >"$out/server.log" 2>&1 &
server=$!
ready=0
for _ in $(seq 1 240); do
  if convserve-cli health --target=127.0.0.1:50051 --layer=batched >/dev/null 2>&1 &&
     convserve-cli health --target=127.0.0.1:50051 --layer=eager >/dev/null 2>&1 &&
     convserve-cli health --target=127.0.0.1:50051 --layer=unbatched >/dev/null 2>&1; then
    ready=1; break
  fi
  sleep 0.5
done
echo "server ready=$ready"; grep -E "serving on|loaded layer|tuned|warm|rror" "$out/server.log" | head -20
convserve-cli list --target=127.0.0.1:50051 >"$out/list.txt" 2>&1

for layer in batched eager unbatched; do
  echo "== perf $layer"
  convserve-cli perf --target=127.0.0.1:50051 --layer=$layer --concurrency=$levels \
    --duration_s="$duration" --warmup_s=1 --out="$out/perf_$layer.json" 2>"$out/perf_$layer.err" |
    tee "$out/perf_$layer.txt"
done
curl -s http://127.0.0.1:9464/metrics >"$out/metrics.txt" 2>/dev/null
kill -TERM $server; wait $server; echo "server exit=$?"
tail -3 "$out/server.log"

echo "== echo floor"
convserve-echo-server --listen=127.0.0.1:50052 --model_repository="$work/repo" >"$out/echo.log" 2>&1 &
echo_pid=$!
sleep 2
convserve-cli perf --target=127.0.0.1:50052 --layer=batched --concurrency=1 --duration_s="$duration" \
  --warmup_s=1 --out="$out/perf_echo.json" 2>"$out/perf_echo.err" | tee "$out/perf_echo.txt"
kill -TERM $echo_pid; wait $echo_pid
rm -rf "$work"
