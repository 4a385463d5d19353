# Shell pieces shared by the serving benchmarks (bench/batching/run_h100.sh,
# bench/multi_gpu/run.sh): source it, then set the variables below. Not a script itself.
#
# perf() reads DURATION_S, WARMUP_S, CONNECTIONS, CLIENT_FLAGS, perf_limit (seconds one sweep
# may take), work (where the JSON goes) and logs (where tables and errors go); bench_workspace
# sets out, work and logs.

# This folder, for the summaries' Python (perf_rows.py): BENCH_LIB=$bench_lib python3 ...
bench_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# bench_workspace: $out (OUT, default /tmp/out), a scratch dir $work holding $logs, and an exit
# trap that packs $logs into $out/logs.tgz and removes $work.
bench_workspace() {
  out=${OUT:-/tmp/out}
  mkdir -p "$out"
  work=$(mktemp -d)
  logs="$work/logs"
  mkdir -p "$logs"
  trap bench_finish EXIT
}
bench_finish() {
  tar -czf "$out/logs.tgz" -C "$work" logs 2>/dev/null
  rm -rf "$work"
}

# gpu_test BINARY: unless DEVICE is cpu or SKIP_GPU_TEST is set, runs the GoogleTest BINARY (at
# most 300 s, log in $logs/BINARY.log) and shows its exit status and verdict lines.
gpu_test() {
  if [ "$DEVICE" = cpu ] || [ -n "${SKIP_GPU_TEST:-}" ]; then return 0; fi
  echo "== $1"
  timeout 300 "$1" --gtest_color=no >"$logs/$1.log" 2>&1
  echo "$1 rc=$?"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure" "$logs/$1.log" | head -10
}

# perf NAME TARGET LAYER LEVELS [FLAGS...]: one closed-loop sweep, table to the log, JSON to
# $work/perf_NAME.json; FLAGS come after the defaults and override them.
perf() {
  local name=$1 target=$2 layer=$3 levels=$4
  shift 4
  echo "== perf $name (concurrency $levels) $*"
  timeout "$perf_limit" convserve-cli perf --target="$target" --layer="$layer" \
    --concurrency="$levels" --duration_s="$DURATION_S" --warmup_s="$WARMUP_S" \
    --connections="$CONNECTIONS" $CLIENT_FLAGS "$@" --out="$work/perf_$name.json" \
    2>"$logs/perf_$name.err" | tee "$logs/perf_$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "perf $name failed (rc $rc):"; tail -3 "$logs/perf_$name.err"; }
}

# perf_limit_for LEVELS: seconds a sweep over LEVELS may take (every level's warm-up and window
# plus a minute of slack).
perf_limit_for() {
  local nlevels=$(($(tr -cd , <<<"$1" | wc -c) + 1))
  echo $((nlevels * (${DURATION_S%.*} + ${WARMUP_S%.*} + 2) + 60))
}

# wait_healthy TARGET LAYER...: true once every layer ("" = the whole server) answers SERVING
# (at most 240 s: the GPU server tunes its warm-up batch sizes before it is ready).
wait_healthy() {
  local target=$1
  shift
  for _ in $(seq 1 480); do
    local all=1
    for layer in "$@"; do
      convserve-cli health --target="$target" --layer="$layer" >/dev/null 2>&1 || all=0
    done
    [ $all = 1 ] && return 0
    sleep 0.5
  done
  return 1
}

# serve LOG TARGET LAYERS READY SERVER...: starts SERVER (a command and its flags) in the
# background with its output in $logs/LOG.log; once every layer in LAYERS (space-separated, ""
# = the server as a whole) answers SERVING on TARGET, runs READY (a function of the calling
# script), or else shows the end of the log. Then stops SERVER and shows "LOG exit=STATUS".
serve() {
  local log=$1 target=$2 layers=$3 ready=$4
  shift 4
  "$@" >"$logs/$log.log" 2>&1 &
  local pid=$!
  local -a names=($layers)
  [ ${#names[@]} -gt 0 ] || names=("")
  if wait_healthy "$target" "${names[@]}"; then
    "$ready"
  else
    echo "$log did not come up:"
    tail -20 "$logs/$log.log"
  fi
  stop $pid
  echo "$log exit=$?"
}

# stop PID: SIGTERM, then the exit status.
stop() {
  kill -TERM "$1" 2>/dev/null
  wait "$1"
}

# bench_layer PYTHON DEMO_DIR LAYER NAME REPO DEVICE: copies layer LAYER (a demo or benchmark
# layer of scripts/make-demo-repository.py, made into DEMO_DIR/LAYER when missing) into REPO/NAME
# under that name. The CPU backend cannot tune: DEVICE "cpu" drops the warm-up sizes.
bench_layer() {
  local python=$1 demo=$2 layer=$3 name=$4 repo=$5 device=$6
  [ -d "$demo/$layer/$layer" ] ||
    "$python" scripts/make-demo-repository.py "$demo/$layer" --layers="$layer" >/dev/null ||
    return 1
  mkdir -p "$repo"
  cp -r "$demo/$layer/$layer" "$repo/$name"
  sed -i "s/^name: .*/name: \"$name\"/" "$repo/$name/config.pbtxt"
  if [ "$device" = cpu ]; then sed -i '/^warmup_batch_sizes/d' "$repo/$name/config.pbtxt"; fi
}

# bench_env LINE...: writes $logs/env.txt and shows it: the date, COMMIT, DEVICE and the core
# count, then each LINE, then the GPU's name and driver unless DEVICE is cpu.
bench_env() {
  {
    echo "date: $(date -u +%FT%TZ)  commit: ${COMMIT:-unknown}  device: $DEVICE  cores: $(nproc)"
    printf '%s\n' "$@"
    if [ "$DEVICE" != cpu ]; then
      nvidia-smi --query-gpu=name,driver_version --format=csv 2>&1 || true
    fi
  } >"$logs/env.txt"
  cat "$logs/env.txt"
}

# bench_eager_layer PYTHON DEMO_DIR LAYER REPO DEVICE: LAYER as REPO/eager (bench_layer), batching
# up to 32 requests within 500 us but launching a lone request at once (preferred size 1).
bench_eager_layer() {
  bench_layer "$1" "$2" "$3" eager "$4" "$5" || return 1
  echo 'batching { max_batch_size: 32 max_queue_delay_us: 500 preferred_batch_sizes: 1 }' \
    >>"$4/eager/config.pbtxt"
}
