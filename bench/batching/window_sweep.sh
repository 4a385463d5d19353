#!/usr/bin/env bash
# Which HTTP/2 stream window to ship (--grpc_stream_window_bytes on server, echo server and
# client), measured on the lent GPU's host in one device call (about 3 minutes), from a
# gpu-bundle holding convserve-server, convserve-cli and convserve-echo-server:
#   . .gpu/s/env.sh; COMMIT=<sha> bash bench/batching/window_sweep.sh
# For each window in WINDOWS (0 is gRPC's own flow control: 64 KiB grown by BDP probing), the
# echo floor and the real server's "eager" layer (run_h100.sh's: batches of up to 32, preferred
# size 1), each at concurrency 1 and 64, every process with that window. ROUNDS passes, the
# second in reverse order, so that drift of the host does not favour one end of the list.
# $OUT receives summary.txt (one row per window and pass), results.json and logs.tgz.
#
# Overrides (environment): DEVICE (cuda:0; cpu to check the script off the GPU machine), LAYER
# (demo_conv3x3), WINDOWS ("0 1048576 4194304 16777216"), ROUNDS (2), DURATION_S (4), WARMUP_S
# (1), CONNECTIONS (8), PORT (50051; the echo uses PORT+1), PYTHON (python3), COMMIT.
set -uo pipefail
# bench_workspace, bench_env, bench_eager_layer, perf, perf_limit_for, serve.
. "$(dirname "$0")/../lib/serving.sh"
bench_workspace
DEVICE=${DEVICE:-cuda:0}
LAYER=${LAYER:-demo_conv3x3}
WINDOWS=${WINDOWS:-0 1048576 4194304 16777216}
ROUNDS=${ROUNDS:-2}
DURATION_S=${DURATION_S:-4}
WARMUP_S=${WARMUP_S:-1}
CONNECTIONS=${CONNECTIONS:-8}
CLIENT_FLAGS=
PORT=${PORT:-50051}
PYTHON=${PYTHON:-python3}
target=127.0.0.1:$PORT
echo_target=127.0.0.1:$((PORT + 1))
perf_limit=$(perf_limit_for 1,64)

bench_env "windows: $WINDOWS  rounds: $ROUNDS  duration_s: $DURATION_S  connections: $CONNECTIONS"
bench_eager_layer "$PYTHON" "$work/demo" "$LAYER" "$work/repo" "$DEVICE" || exit 1

# One pass over the windows; the tag names the JSON files (perf_<echo|eager>_<window>_<pass>).
sweep_pass() {
  local pass=$1 windows=$2 window
  for window in $windows; do
    tag=${window}_$pass
    serve "echo_$tag" "$echo_target" "" echo_levels \
      convserve-echo-server --listen="$echo_target" --model_repository="$work/repo" \
      --grpc_stream_window_bytes="$window"
    # The state dir is shared by all passes: the server tunes its warm-up sizes only once.
    serve "server_$tag" "$target" eager server_levels \
      convserve-server --device="$DEVICE" --listen="$target" --state_dir="$work/state" \
      --model_repository="$work/repo" --grpc_stream_window_bytes="$window"
  done
}
echo_levels() { perf "echo_$tag" "$echo_target" eager 1,64 --grpc_stream_window_bytes="${tag%_*}"; }
server_levels() { perf "eager_$tag" "$target" eager 1,64 --grpc_stream_window_bytes="${tag%_*}"; }

reversed=$(tr ' ' '\n' <<<"$WINDOWS" | tac | tr '\n' ' ')
for pass in $(seq 1 "$ROUNDS"); do
  if [ $((pass % 2)) = 1 ]; then sweep_pass "$pass" "$WINDOWS"; else sweep_pass "$pass" "$reversed"; fi
done

"$PYTHON" - "$work" "$out" "$logs/env.txt" "$WINDOWS" "$ROUNDS" <<'EOF' | tee "$out/summary.txt"
import json, os, sys
work, out, env_path, windows, rounds = sys.argv[1:6]
rows = []
for window in windows.split():
    for pass_no in range(1, int(rounds) + 1):
        row = {"window_bytes": int(window), "pass": pass_no}
        for side in ("echo", "eager"):
            path = os.path.join(work, f"perf_{side}_{window}_{pass_no}.json")
            levels = {r["load"]: r for r in json.load(open(path))} if os.path.exists(path) else {}
            for c in (1, 64):
                r = levels.get(c)
                row[f"{side}_c{c}_p50_us"] = r["latency_us"]["p50"] if r else None
                row[f"{side}_c{c}_req_s"] = r["throughput_rps"] if r else None
                row[f"{side}_c{c}_errors"] = r["errors"] + r["not_sent"] if r else None
        rows.append(row)
json.dump({"env": open(env_path).read().splitlines(), "rows": rows},
          open(os.path.join(out, "results.json"), "w"), indent=1)
print(open(env_path).read().rstrip())
print("window: --grpc_stream_window_bytes on every process (0: gRPC's flow control, BDP probing)")
print("%-10s %4s %12s %12s %13s %13s %7s" % ("window", "pass", "echo c1 p50", "eager c1 p50",
                                           "echo c64 r/s", "eager c64 r/s", "errors"))
fmt = lambda v, f: f % v if v is not None else "-"
for r in rows:
    errors = sum(r[k] or 0 for k in r if k.endswith("_errors"))
    print("%-10s %4d %12s %12s %13s %13s %7d" % (
        r["window_bytes"], r["pass"], fmt(r["echo_c1_p50_us"], "%.0f"),
        fmt(r["eager_c1_p50_us"], "%.0f"), fmt(r["echo_c64_req_s"], "%.0f"),
        fmt(r["eager_c64_req_s"], "%.0f"), errors))
EOF
