#!/usr/bin/env bash
# Where the server's time goes per batch, stage by stage, at a few concurrency levels, from its
# own metrics (convserve_executor_stage_seconds: staging, enqueue, wait, split, answer), beside
# the client's p50 and the echo floor for the same bytes. One device call (about a minute) from
# a gpu-bundle holding convserve-server, convserve-cli and convserve-echo-server:
#   . .gpu/s/env.sh; COMMIT=<sha> bash bench/batching/stage_breakdown.sh
# For each level the server's /metrics is read before and after the sweep; a stage's mean is the
# difference of its histogram sums over the difference of its counts, so only that level's
# batches count. $OUT receives summary.txt, results.json, metrics_last.txt (the last scrape) and
# logs.tgz.
#
# Overrides (environment): DEVICE (cuda:0; cpu to check the script off the GPU machine), LAYER
# (demo_conv3x3), LEVELS (1,64), DURATION_S (4), WARMUP_S (1), CONNECTIONS (8), SERVER_FLAGS,
# ECHO_FLAGS (e.g. --zero_copy_forward), CLIENT_FLAGS, PORT (50051; the echo uses PORT+1,
# metrics PORT+2), PYTHON (python3), COMMIT.
set -uo pipefail
# bench_workspace, bench_env, bench_eager_layer, perf, perf_limit_for, serve.
. "$(dirname "$0")/../lib/serving.sh"
bench_workspace
DEVICE=${DEVICE:-cuda:0}
LAYER=${LAYER:-demo_conv3x3}
LEVELS=${LEVELS:-1,64}
DURATION_S=${DURATION_S:-4}
WARMUP_S=${WARMUP_S:-1}
CONNECTIONS=${CONNECTIONS:-8}
SERVER_FLAGS=${SERVER_FLAGS:-}
ECHO_FLAGS=${ECHO_FLAGS:-}
CLIENT_FLAGS=${CLIENT_FLAGS:-}
PORT=${PORT:-50051}
PYTHON=${PYTHON:-python3}
target=127.0.0.1:$PORT
echo_target=127.0.0.1:$((PORT + 1))
metrics_url=http://127.0.0.1:$((PORT + 2))/metrics
perf_limit=$(perf_limit_for 1)

bench_env "layer: $LAYER (eager: batches of up to 32, preferred size 1)  levels: $LEVELS" \
  "server flags: ${SERVER_FLAGS:-none}  echo flags: ${ECHO_FLAGS:-none}" \
  "client flags: ${CLIENT_FLAGS:-none}"
bench_eager_layer "$PYTHON" "$work/demo" "$LAYER" "$work/repo" "$DEVICE" || exit 1

echo_levels() {
  for level in ${LEVELS//,/ }; do perf "echo_$level" "$echo_target" eager "$level"; done
}
serve echo "$echo_target" "" echo_levels \
  convserve-echo-server --listen="$echo_target" --model_repository="$work/repo" $ECHO_FLAGS

scrape() { curl -s "$metrics_url" >"$work/metrics_$1.txt" || echo "scrape $1 failed"; }
server_levels() {
  for level in ${LEVELS//,/ }; do
    scrape "before_$level"
    perf "eager_$level" "$target" eager "$level"
    scrape "after_$level"
  done
}
serve server "$target" eager server_levels \
  convserve-server --device="$DEVICE" --listen="$target" \
  --metrics_listen=127.0.0.1:$((PORT + 2)) --state_dir="$work/state" \
  --model_repository="$work/repo" $SERVER_FLAGS

# The last scrape stays beside the summary (occupancy, batch sizes, every other series).
cp "$work/metrics_after_${LEVELS##*,}.txt" "$out/metrics_last.txt" 2>/dev/null

"$PYTHON" - "$work" "$out" "$logs/env.txt" "$LEVELS" <<'EOF' | tee "$out/summary.txt"
import json, os, re, sys
work, out, env_path, levels = sys.argv[1:5]
STAGES = ["staging", "enqueue", "wait", "split", "answer"]
# Summed over devices and layers (one layer is served here); older servers had no layer label.
SAMPLE = re.compile(r'^convserve_executor_stage_seconds_(sum|count)\{device="[^"]*",'
                    r'(?:layer="[^"]*",)?stage="([a-z]+)"\} (\S+)$')

def stage_totals(path):
    totals = {}
    for line in open(path) if os.path.exists(path) else []:
        m = SAMPLE.match(line.strip())
        if m:
            key = (m.group(2), m.group(1))
            totals[key] = totals.get(key, 0.0) + float(m.group(3))
    return totals

def first_row(path):
    return json.load(open(path))[0] if os.path.exists(path) else None

rows = []
for level in levels.split(","):
    before = stage_totals(os.path.join(work, f"metrics_before_{level}.txt"))
    after = stage_totals(os.path.join(work, f"metrics_after_{level}.txt"))
    row = {"concurrency": int(level)}
    for stage in STAGES:
        count = after.get((stage, "count"), 0) - before.get((stage, "count"), 0)
        total = after.get((stage, "sum"), 0) - before.get((stage, "sum"), 0)
        row[f"{stage}_mean_us"] = total / count * 1e6 if count > 0 else None
        row["batches"] = count
    eager = first_row(os.path.join(work, f"perf_eager_{level}.json"))
    echo = first_row(os.path.join(work, f"perf_echo_{level}.json"))
    row["eager"] = eager
    row["echo"] = echo
    rows.append(row)
json.dump({"env": open(env_path).read().splitlines(), "rows": rows},
          open(os.path.join(out, "results.json"), "w"), indent=1)
print(open(env_path).read().rstrip())
print("per batch, mean us of each executor stage (server metrics); p50s from the client; "
      "compute: the server's timed copies + kernel (p50); srv total: accepted to results ready "
      "(mean)")
head = ["conc", "echo p50", "p50", "req/s", "compute", "srv total", "meanN"] + STAGES
print(" ".join("%9s" % h for h in head))
fmt = lambda v, f="%.0f": (f % v) if v is not None else "-"
for r in rows:
    e, s = r["eager"] or {}, r["echo"] or {}
    cells = [str(r["concurrency"]),
             fmt(s.get("latency_us", {}).get("p50")), fmt(e.get("latency_us", {}).get("p50")),
             fmt(e.get("throughput_rps")), fmt(e.get("server_us", {}).get("compute_p50")),
             fmt(e.get("server_us", {}).get("total_mean")), fmt(e.get("mean_batch_size"), "%.1f")]
    cells += [fmt(r[f"{stage}_mean_us"], "%.1f") for stage in STAGES]
    print(" ".join("%9s" % c for c in cells))
EOF
