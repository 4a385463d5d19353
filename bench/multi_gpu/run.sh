#!/usr/bin/env bash
# Several GPUs in one server (issue 11), in one device call on a machine with >= 2 GPUs, from a
# gpu-bundle holding convserve-server, convserve-cli, convserve-echo-server and
# multi_gpu_server_test (bench/multi_gpu/NOTES.md says how to build and send):
#   . .gpu/b/env.sh; COMMIT=<sha> bash bench/multi_gpu/run.sh
# 1. multi_gpu_server_test (--devices=all: every reply checked against the fp64 reference,
#    batches on every GPU), unless SKIP_GPU_TEST=1;
# 2. the echo floor at LEVELS (convserve-echo-server: the same bytes, no GPU work), the most
#    any number of GPUs can reach through one gRPC front-end; SKIP_ECHO=1 skips it;
# 3. one convserve-server per device set serving two layers (max_batch_size 32, 500 us delay):
#    "conv", the 1x64x56x56 FP16 3x3 layer of the batching benchmark, which the front-end
#    limits, and "heavy", a GPU-bound layer with the same request and reply bytes (3x3
#    2048->2048 on 7x7, exact FP32: 16x the FLOPs on FFMA); --devices=$ONE (one GPU) and
#    --devices=$ALL (every GPU), each layer swept closed-loop at LEVELS;
# 4. a summary per layer: req/s with every GPU / one GPU at each level (target >= 1.8x with two
#    GPUs), the echo floor / one GPU (the ceiling of that ratio), and how the batches of the
#    many-GPU run spread over the GPUs (from its /metrics).
# $OUT receives summary.txt, results.json and logs.tgz (server logs, perf tables, metrics).
#
# Overrides (environment): DEVICE (cuda; "cpu" runs the whole script on CPU reference executors,
# --devices=cpu against --devices=cpu,cpu, to check it off the GPU machine), ONE (0), ALL (all),
# LAYER (demo_conv3x3), HEAVY_LAYER (bench_conv3x3_2048_fp32; with DEVICE=cpu its 64-channel
# stand-in bench_conv3x3_64_fp32; empty: serve only LAYER), LEVELS (64,256), DURATION_S (5),
# WARMUP_S (2), CONNECTIONS (16),
# SERVER_FLAGS, CLIENT_FLAGS, PORT (50051; metrics PORT+2), PYTHON (python3, with numpy),
# SKIP_GPU_TEST, COMMIT.
set -uo pipefail
# bench_workspace, gpu_test, perf, perf_limit_for, serve, wait_healthy, stop, bench_layer.
. "$(dirname "$0")/../lib/serving.sh"
bench_workspace
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cpu ]; then
  ONE=${ONE:-cpu}
  ALL=${ALL:-cpu,cpu}
  HEAVY_LAYER=${HEAVY_LAYER-bench_conv3x3_64_fp32}
else
  ONE=${ONE:-0}
  ALL=${ALL:-all}
  HEAVY_LAYER=${HEAVY_LAYER-bench_conv3x3_2048_fp32}
fi
LAYER=${LAYER:-demo_conv3x3}
LEVELS=${LEVELS:-64,256}
DURATION_S=${DURATION_S:-5}
WARMUP_S=${WARMUP_S:-2}
CONNECTIONS=${CONNECTIONS:-16}
SERVER_FLAGS=${SERVER_FLAGS:-}
CLIENT_FLAGS=${CLIENT_FLAGS:-}
PORT=${PORT:-50051}
PYTHON=${PYTHON:-python3}
target=127.0.0.1:$PORT
metrics_port=$((PORT + 2))

gpus=0
if [ "$DEVICE" != cpu ]; then gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); fi
{
  echo "date: $(date -u +%FT%TZ)  commit: ${COMMIT:-unknown}  device: $DEVICE  gpus: $gpus" \
    " cores: $(nproc)"
  echo "one: --devices=$ONE  all: --devices=$ALL  levels: $LEVELS  duration_s: $DURATION_S" \
    " warmup_s: $WARMUP_S  connections: $CONNECTIONS"
  echo "layers: conv=$LAYER heavy=${HEAVY_LAYER:-(none)}"
  echo "server flags: $SERVER_FLAGS  client flags: $CLIENT_FLAGS"
  { [ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=index,name,driver_version,clocks.sm \
    --format=csv; } 2>&1
} >"$logs/env.txt"
cat "$logs/env.txt"
if [ "$DEVICE" != cpu ] && [ "$gpus" -lt 2 ]; then
  echo "WARNING: $gpus GPU(s) visible: the all/one ratio needs at least 2 (running anyway)"
fi

perf_limit=$(perf_limit_for "$LEVELS")
gpu_test multi_gpu_server_test

# The served layers by name: conv, and heavy unless HEAVY_LAYER is empty (not "names": serve()
# has a local of that name, which bash's dynamic scoping would show to the callbacks).
served=conv
bench_layer "$PYTHON" "$work/demo" "$LAYER" conv "$work/repo" "$DEVICE" || exit 1
if [ -n "$HEAVY_LAYER" ]; then
  served="conv heavy"
  bench_layer "$PYTHON" "$work/demo" "$HEAVY_LAYER" heavy "$work/repo" "$DEVICE" || exit 1
fi
for name in $served; do
  echo 'batching { max_batch_size: 32 max_queue_delay_us: 500 }' >>"$work/repo/$name/config.pbtxt"
  cat "$work/repo/$name/config.pbtxt" >"$logs/layer_config_$name.txt"
done

echo_floor() { for name in $served; do perf "echo_$name" "$target" "$name" "$LEVELS"; done; }
if [ -z "${SKIP_ECHO:-}" ]; then
  serve echo "$target" "" echo_floor \
    convserve-echo-server --listen="$target" --model_repository="$work/repo"
fi

# One server per device set, the same state dir (the second run finds the first's tunings).
server_sweep() {
  echo "server --devices=$devices ready"
  convserve-cli list --target="$target" >"$logs/list_$run.txt" 2>&1
  for name in $served; do perf "${run}_$name" "$target" "$name" "$LEVELS"; done
  curl -s "http://127.0.0.1:$metrics_port/metrics" >"$logs/metrics_$run.txt" 2>/dev/null
}
for run in one all; do
  devices=$ONE
  [ $run = all ] && devices=$ALL
  serve "server_$run" "$target" "$served" server_sweep \
    convserve-server --devices="$devices" --listen="$target" \
    --metrics_listen=127.0.0.1:$metrics_port --state_dir="$work/state" \
    --model_repository="$work/repo" $SERVER_FLAGS
  grep -E "rror|WARN" "$logs/server_$run.log" | head -5
done

BENCH_LIB=$bench_lib "$PYTHON" - "$work" "$out" "$logs" $served <<'PY'
import json, os, re, sys
sys.path.insert(0, os.environ["BENCH_LIB"])
from perf_rows import perf_row
work, out, logs = sys.argv[1:4]
names = sys.argv[4:]
results = {"env": open(os.path.join(logs, "env.txt")).read().splitlines(), "layers": {}}
runs = ["echo", "one", "all"]

# Batches and samples per device label for one layer, from a scraped page.
def per_device(run, name):
    path = os.path.join(logs, f"metrics_{run}.txt")
    spread = {}
    if not os.path.exists(path):
        return spread
    for line in open(path):
        m = re.match(r'convserve_batch_size_(count|sum)\{(.*)\} (\S+)', line)
        if not m or f'layer="{name}"' not in m.group(2):
            continue
        device = re.search(r'device="([^"]*)"', m.group(2)).group(1)
        entry = spread.setdefault(device, {"count": 0.0, "sum": 0.0})
        entry[m.group(1)] += float(m.group(3))
    return spread

lines = []
for name in names:
    layer = {}
    for run in runs:
        path = os.path.join(work, f"perf_{run}_{name}.json")
        layer[run] = json.load(open(path)) if os.path.exists(path) else []
    layer["batches_per_device"] = {run: per_device(run, name) for run in ["one", "all"]}
    results["layers"][name] = layer
    config = open(os.path.join(logs, f"layer_config_{name}.txt")).read()
    shape = " ".join(l.split(":")[1].strip().strip('"') for l in config.splitlines()
                     if l.startswith(("in_channels", "out_channels", "dtype", "precision")))
    lines.append(f"== layer {name} ({shape})")
    lines.append("run  conc  conn     req/s    p50_us    p99_us  meanN  errors")
    for run in runs:
        for r in layer[run]:
            lines.append(perf_row(run, r, 4))
    for r in layer["all"]:
        one = [o for o in layer["one"] if o["load"] == r["load"]]
        if one and one[0]["throughput_rps"] > 0:
            ratio = r["throughput_rps"] / one[0]["throughput_rps"]
            lines.append(f"c={r['load']:g} throughput all/one: {r['throughput_rps']:.0f}/"
                         f"{one[0]['throughput_rps']:.0f} = {ratio:.2f}x (target >= 1.8x with "
                         f"two GPUs: {'MET' if ratio >= 1.8 else 'NOT met'})")
        echo = [e for e in layer["echo"] if e["load"] == r["load"]]
        if one and echo and one[0]["throughput_rps"] > 0:
            lines.append(f"c={r['load']:g} echo floor {echo[0]['throughput_rps']:.0f} req/s = "
                         f"{echo[0]['throughput_rps'] / one[0]['throughput_rps']:.2f}x one GPU: "
                         f"the most the front-end lets any number of GPUs reach")
    for device, entry in sorted(layer["batches_per_device"]["all"].items()):
        mean = entry["sum"] / entry["count"] if entry["count"] else 0
        lines.append(f"all: {device}: {entry['count']:.0f} batches, {entry['sum']:.0f} samples "
                     f"(mean batch {mean:.1f})")
    lines.append("")
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
summary = "\n".join(lines)
open(os.path.join(out, "summary.txt"), "w").write("\n".join(results["env"]) + "\n\n" + summary)
print(summary, end="")
PY
