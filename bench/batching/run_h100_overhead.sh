#!/usr/bin/env bash
# The concurrency-1 overhead check on the lent GPU, in one device call (about 4 minutes):
# run_h100.sh twice, once with the shipped transport (gRPC's own flow control) at concurrency 1,
# 8 and 64, and once with a fixed 1 MiB stream window on server, echo server and client at 1 and
# 64 (FIXED_WINDOW_LEVELS), then one table of what the server adds over the echo floor at
# concurrency 1. From a gpu-bundle holding
# convserve-server, convserve-cli, convserve-echo-server and gpu_server_test (NOTES.md):
#   . .gpu/b/env.sh; COMMIT=<sha> bash bench/batching/run_h100_overhead.sh
# $OUT gets fixed-window/ and default-window/ (each summary.txt, results.json, logs.tgz) and
# overhead.txt. gpu_server_test runs once, first (SKIP_GPU_TEST=1 skips it). LEVELS, DURATION_S,
# WARMUP_S, ROUNDS and the rest pass through to run_h100.sh.
set -uo pipefail
out=${OUT:-/tmp/out}
here=$(dirname "$0")
PYTHON=${PYTHON:-python3}
export LEVELS=${LEVELS:-1,8,64}

OUT=$out/default-window bash "$here/run_h100.sh"
echo "default-window exit=$?"
window=--grpc_stream_window_bytes=1048576
LEVELS=${FIXED_WINDOW_LEVELS:-1,64} OUT=$out/fixed-window SKIP_GPU_TEST=1 \
  SERVER_FLAGS="${SERVER_FLAGS:-} $window" ECHO_FLAGS="${ECHO_FLAGS:-} $window" \
  CLIENT_FLAGS="${CLIENT_FLAGS:-} $window" bash "$here/run_h100.sh"
echo "fixed-window exit=$?"

"$PYTHON" - "$out" <<'EOF' | tee "$out/overhead.txt"
import json, os, sys
out = sys.argv[1]
print("concurrency 1, p50 in us: the client's latency against the echo floor (same bytes, no "
      "work) plus the server's timed compute (copies + kernel); 'other' is the server time "
      "left: hand-offs, staging and reply copies, reply assembly")
print(f"{'window':<15} {'variant':<10} {'p50':>6} {'echo':>6} {'compute':>8} {'queue':>6} "
      f"{'other':>6} {'overhead':>9}")
for window in ("default-window", "fixed-window"):
    path = os.path.join(out, window, "results.json")
    if not os.path.exists(path):
        print(f"{window}: no results.json")
        continue
    results = json.load(open(path))
    at1 = lambda name: next((r for r in results.get(name, []) if r["load"] == 1), None)
    echo = at1("echo_c1")
    for name in ("eager", "unbatched", "batched"):
        r = at1(name)
        if not (r and echo):
            continue
        p50, floor = r["latency_us"]["p50"], echo["latency_us"]["p50"]
        compute, queue = r["server_us"]["compute_p50"], r["server_us"]["queue_p50"]
        over = p50 / (floor + compute) - 1
        print(f"{window:<15} {name:<10} {p50:>6.0f} {floor:>6.0f} {compute:>8.0f} {queue:>6.0f} "
              f"{p50 - floor - compute:>6.0f} {over:>+8.0%}  (target <= +15%: "
              f"{'MET' if over <= 0.15 else 'NOT met'})")
    # The same overhead from the interleaved (echo, eager) pairs of run_h100.sh's phase 2b.
    pairs = results.get("interleaved_c1", [])
    if pairs:
        overs = sorted(p["eager_p50_us"] / (p["echo_p50_us"] + p["eager_compute_p50_us"]) - 1
                       for p in pairs)
        print(f"{window:<15} interleaved: median {overs[len(overs) // 2]:+.0%} over "
              f"{len(overs)} rounds (range {overs[0]:+.0%} to {overs[-1]:+.0%})")
    # Throughput under load, to see that the c=1 changes cost nothing there.
    at64 = {name: next((r for r in results.get(name, []) if r["load"] == 64), None)
            for name in ("echo_c64", "batched", "eager", "unbatched")}
    print(f"{window:<15} c=64 req/s: " + ", ".join(
        f"{name} {r['throughput_rps']:.0f}" for name, r in at64.items() if r))
EOF
