#!/usr/bin/env bash
# The batcher's scheduler wake-ups on the CPU backend (no GPU): two convserve-server binaries,
# OLD and NEW, each serving a tiny 1x1 layer (1x8x8x8 fp32, 2 KB each way) batched (max 32,
# 500 us delay) and unbatched, with the tensors in shared memory, at c = 64. Per side: throughput
# (ROUNDS rounds, default 3, alternating), then futex calls and context switches of the server over 2 s
# under the batched load (perf stat). Needs numpy and perf.
#   OLD=/tmp/server_old NEW=build-cpu/server/convserve-server CLI=build-cpu/client/convserve-cli \
#     bash bench/results/2026-12-07_scheduler_wakeups_cpu/run.sh
set -uo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PORT=${PORT:-50601}
target=127.0.0.1:$PORT
/usr/bin/python3 - "$work/repo" <<'PY' || exit 1
import os, sys
import numpy as np
for name, max_batch in (("tb", 32), ("tu", 1)):
    d = os.path.join(sys.argv[1], name)
    os.makedirs(d)
    w = np.random.default_rng(0).standard_normal((8, 8, 1, 1)).astype(np.float32)
    np.save(os.path.join(d, "weights.npy"), w)
    with open(os.path.join(d, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\nin_channels: 8\nout_channels: 8\nkernel {{ h: 1 w: 1 }}\n'
                'groups: 1\ndtype: DATA_TYPE_FP32\nhas_bias: false\n'
                'activation: ACTIVATION_NONE\ninput_size { h: 8 w: 8 }\n'
                f'batching {{ max_batch_size: {max_batch} max_queue_delay_us: 500 }}\n')
PY
start() {
  "$1" --device=cpu --listen="$target" --metrics_listen=127.0.0.1:$((PORT + 1)) \
    --model_repository="$work/repo" --state_dir="$work/state" --allow_shared_memory \
    >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 40); do "$CLI" health --target="$target" >/dev/null 2>&1 && return; sleep 0.25; done
}
perf_row() {  # layer, seconds -> "req/s p50_us meanN"
  "$CLI" perf --target="$target" --layer="$1" --concurrency=64 --duration_s="$2" --warmup_s=1 \
    --shared_memory 2>&1 | awk '$1=="concurrency"{print $7, $8, $14}'
}
for round in $(seq "${ROUNDS:-3}"); do
  for side in OLD NEW; do
    start "${!side}"
    echo "round $round $side batched $(perf_row tb 4) unbatched $(perf_row tu 4)"
    kill "$pid"; wait "$pid"
  done
done
for side in OLD NEW OLD NEW; do
  start "${!side}"
  perf_row tb 5 >"$work/row" &
  load=$!
  sleep 2.5
  counts=$(perf stat -e syscalls:sys_enter_futex,context-switches -p "$pid" -x, -- sleep 2 2>&1 |
    cut -d, -f1 | tr '\n' ' ')
  wait "$load"
  echo "$side futex context-switches per 2 s: $counts batched $(cat "$work/row")"
  kill "$pid"; wait "$pid"
done
