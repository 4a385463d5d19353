#!/usr/bin/env bash
# Second device call for this folder's PREDICTION.md (part 2): is the closed loop at c = 64
# bound by the load generator, and what does a smaller max_batch_size do?
# One server (the bundle pf, HEAD) serving the demo layer as: b32 (max 32, 500 us: run_h100.sh's
# "batched"), b16 and b22 (max 16 / 22, 500 us) and unbatched (max 1); tensors in the client's
# GPU memory. Each check is 1 s warm-up + 3 s. Then the same with --gpu_lanes=LANES2 (4).
# device: carry [".gpu/pf.tar.xz"]: bash bench/results/2026-12-07_cpu_profile/device_run2.sh
set -uo pipefail
. bench/conv/device_steps.sh
device_begin pf cpu_profile2
. bench/lib/serving.sh
bench_workspace
DEVICE=cuda:0
DURATION_S=3
WARMUP_S=1
CONNECTIONS=8
CLIENT_FLAGS=""
target=127.0.0.1:50051
layers="b32 b22 b16 unbatched"
for name in $layers; do bench_layer python3 "$work/demo" demo_conv3x3 $name "$work/repo" $DEVICE; done
echo 'batching { max_batch_size: 32 max_queue_delay_us: 500 }' >>"$work/repo/b32/config.pbtxt"
echo 'batching { max_batch_size: 22 max_queue_delay_us: 500 }' >>"$work/repo/b22/config.pbtxt"
echo 'batching { max_batch_size: 16 max_queue_delay_us: 500 }' >>"$work/repo/b16/config.pbtxt"
echo 'batching { max_batch_size: 1 }' >>"$work/repo/unbatched/config.pbtxt"
# split NAME LAYER PROCESSES: c = 64 spread over PROCESSES perf processes at once (64/P each,
# 8/P connections each); sums their req/s.
split() {
  local name=$1 layer=$2 processes=$3 i pids=""
  for i in $(seq 1 "$processes"); do
    timeout 60 convserve-cli perf --target=$target --layer="$layer" \
      --concurrency=$((64 / processes)) --duration_s=$DURATION_S --warmup_s=$WARMUP_S \
      --connections=$((8 / processes)) --cuda_shared_memory=0 --out="$work/${name}_$i.json" \
      >"$logs/${name}_$i.txt" 2>&1 &
    pids="$pids $!"
  done
  wait $pids  # not a bare wait: the server is a child of this shell too
  python3 - "$work" "$name" "$processes" <<'PY'
import json, sys
work, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.load(open(f"{work}/{name}_{i}.json"))[0] for i in range(1, n + 1)]
rps = sum(r["throughput_rps"] for r in rows)
p50 = [r["latency_us"]["p50"] for r in rows]
srv = [r["server_us"]["total_mean"] for r in rows]
n_b = [r["mean_batch_size"] for r in rows]
print(f"{name:24s} processes {n}  req/s {rps:8.0f}  p50 {' '.join(f'{x:.0f}' for x in p50)}  "
      f"server total {' '.join(f'{x:.0f}' for x in srv)}  meanN {' '.join(f'{x:.1f}' for x in n_b)}",
      flush=True)
PY
}
checks() {
  local tag=$1
  split "${tag}_b32_p1" b32 1
  split "${tag}_b32_p2" b32 2
  split "${tag}_b32_p4" b32 4
  split "${tag}_unb_p1" unbatched 1
  split "${tag}_unb_p2" unbatched 2
  split "${tag}_b22_p1" b22 1
  split "${tag}_b16_p1" b16 1
  split "${tag}_b16_p2" b16 2
  split "${tag}_b32_p1again" b32 1
}
lanes2() { checks lanes2; }
lanes4() { checks lanes${LANES2:-4}; }
serve server "$target" "$layers" lanes2 convserve-server --device=$DEVICE --listen=$target \
  --state_dir="$work/state" --model_repository="$work/repo" --allow_shared_memory
serve server4 "$target" "$layers" lanes4 convserve-server --device=$DEVICE --listen=$target \
  --state_dir="$work/state" --model_repository="$work/repo" --allow_shared_memory \
  --gpu_lanes=${LANES2:-4}
cp -r "$logs" "$O/logs"
device_end
