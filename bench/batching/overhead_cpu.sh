#!/usr/bin/env bash
# The server's own per-request overhead at concurrency 1, off the GPU: convserve-server on the
# CPU reference backend against convserve-echo-server (same request and reply bytes, no work),
# with layers whose compute is negligible, so the difference in p50 is what the server adds
# around the conv (hand-offs between threads, copies, reply assembly).
#   tiny: 1x8x8x8 fp32, 1x1 kernel (2 KB each way): hand-offs and fixed costs only.
#   wide: 1x64x56x56 fp16, depthwise 1x1 (401 KB each way, the H100 benchmark's bytes): the
#         same plus what the server does per byte.
# Both batch eagerly (max_batch_size 32, 500 us delay, preferred size 1), as run_h100.sh's
# "eager" variant. Rounds alternate echo and server so machine noise hits both alike.
#
#   PATH=$PWD/build-h5/client:$PWD/build-h5/server:$PWD/build-h5/bench/echo:$PATH \
#     bash bench/batching/overhead_cpu.sh
# Overrides: LAYERS ("tiny wide"), ROUNDS (3), DURATION_S (3), PORT (50481; the echo uses PORT+1), CLIENT_FLAGS,
# SERVER_FLAGS, PYTHON (python3 with numpy), OUT (where perf JSON lands; a temp dir).
set -uo pipefail
LAYERS=${LAYERS:-tiny wide}
ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-3}
PORT=${PORT:-50481}
CLIENT_FLAGS=${CLIENT_FLAGS:-}
SERVER_FLAGS=${SERVER_FLAGS:-}
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
out=${OUT:-$work/out}
mkdir -p "$out"
trap 'rm -rf "$work"' EXIT
target=127.0.0.1:$PORT
echo_target=127.0.0.1:$((PORT + 1))

"$PYTHON" - "$work/repo" <<'EOF' || exit 1
import os, sys
import numpy as np
root = sys.argv[1]
layers = {
    "tiny": dict(c=8, k=8, groups=1, hw=8, dtype="FP32", np=np.float32),
    "wide": dict(c=64, k=64, groups=64, hw=56, dtype="FP16", np=np.float16),
}
for name, s in layers.items():
    d = os.path.join(root, name)
    os.makedirs(d)
    w = np.random.default_rng(0).standard_normal((s["k"], s["c"] // s["groups"], 1, 1))
    np.save(os.path.join(d, "weights.npy"), w.astype(s["np"]))
    with open(os.path.join(d, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\nin_channels: {s["c"]}\nout_channels: {s["k"]}\n'
                f'kernel {{ h: 1 w: 1 }}\ngroups: {s["groups"]}\ndtype: DATA_TYPE_{s["dtype"]}\n'
                f'has_bias: false\nactivation: ACTIVATION_NONE\n'
                f'input_size {{ h: {s["hw"]} w: {s["hw"]} }}\n'
                'batching { max_batch_size: 32 max_queue_delay_us: 500 preferred_batch_sizes: 1 }\n')
EOF

wait_healthy() {
  for _ in $(seq 1 120); do
    convserve-cli health --target="$1" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "no server at $1" >&2
  return 1
}

convserve-echo-server --listen="$echo_target" --model_repository="$work/repo" \
  >"$work/echo.log" 2>&1 &
echo_pid=$!
convserve-server --device=cpu --cpu_threads=1 --listen="$target" --metrics_listen= \
  --state_dir="$work/state" --model_repository="$work/repo" $SERVER_FLAGS \
  >"$work/server.log" 2>&1 &
server_pid=$!
trap 'kill $echo_pid $server_pid 2>/dev/null; wait $echo_pid $server_pid 2>/dev/null; rm -rf "$work"' EXIT
wait_healthy "$echo_target" && wait_healthy "$target" || { tail -5 "$work"/*.log; exit 1; }

for round in $(seq 1 "$ROUNDS"); do
  for layer in $LAYERS; do
    for side in echo server; do
      t=$target
      [ $side = echo ] && t=$echo_target
      convserve-cli perf --target="$t" --layer="$layer" --concurrency=1 --connections=1 \
        --duration_s="$DURATION_S" --warmup_s=0.5 $CLIENT_FLAGS \
        --out="$out/${layer}_${side}_$round.json" >/dev/null 2>"$work/perf.err" ||
        { echo "perf $layer $side failed:"; tail -3 "$work/perf.err"; }
    done
  done
done

"$PYTHON" - "$out" "$ROUNDS" $LAYERS <<'EOF'
import json, os, statistics, sys
out, rounds, layers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("layer  side     p50_us  (per round)              srv_total  srv_queue  srv_compute")
for layer in layers:
    p50 = {}
    for side in ("echo", "server"):
        rows = []
        for r in range(1, rounds + 1):
            path = os.path.join(out, f"{layer}_{side}_{r}.json")
            if os.path.exists(path):
                rows += json.load(open(path))
        vals = [r["latency_us"]["p50"] for r in rows]
        p50[side] = statistics.median(vals) if vals else float("nan")
        total = statistics.median([r["server_us"]["total_mean"] for r in rows]) if rows else 0
        queue = statistics.median([r["server_us"]["queue_p50"] for r in rows]) if rows else 0
        comp = statistics.median([r["server_us"]["compute_p50"] for r in rows]) if rows else 0
        print(f"{layer:<6} {side:<7} {p50[side]:>7.0f}  {' '.join(f'{v:.0f}' for v in vals):<24} "
              f"{total:>9.0f} {queue:>10.0f} {comp:>12.0f}")
    print(f"{layer:<6} server - echo: {p50['server'] - p50['echo']:+.0f} us p50")
EOF
