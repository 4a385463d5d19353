#!/usr/bin/env bash
# One device call for PREDICTION.md (here): where the host's CPU goes during the c = 64 sweep
# from the client's GPU memory (batching_check, bench/conv/device_steps.sh), variant by variant.
# A watcher waits for each variant's convserve-cli perf, lets its warm-up pass, then over WINDOW_S
# seconds takes every thread's CPU time of the server and the client from /proc (before and
# after) and, where the container allows it, a perf profile of both processes.
# Bundle: gpu-bundle .gpu/pf convserve-server convserve-cli convserve-echo-server /usr/bin/perf
#   -- tests/data; strip --strip-debug on the convserve binaries; tar | xz.
# device: carry [".gpu/pf.tar.xz"]: bash bench/results/2026-12-07_cpu_profile/device_run.sh
# BUNDLE names another bundle (it must carry perf too), e.g. to profile a later server.
set -uo pipefail
. bench/conv/device_steps.sh
device_begin "${BUNDLE:-pf}" cpu_profile
WINDOW_S=${WINDOW_S:-1.5}  # run 1's 2 s took 2.5-2.9 s with perf and missed the client's end
here=bench/results/2026-12-07_cpu_profile
{
  echo "perf_event_paranoid: $(cat /proc/sys/kernel/perf_event_paranoid 2>&1)"
  perf stat -e task-clock,context-switches true 2>&1 | tail -6
} >"$O/perf_check.txt" 2>&1
cat "$O/perf_check.txt"
# snapshot FILE PID...: one line per thread: pid tid comm utime stime (clock ticks), then the
# machine's /proc/stat cpu line.
snapshot() {
  local file=$1 pid
  shift
  {
    for pid in "$@"; do
      for task in /proc/"$pid"/task/*; do
        echo "$pid ${task##*/} $(sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1|\2/' "$task/stat" |
          awk -F'|' '{split($2, f, " "); gsub(/ /, "_", $1); print $1, f[12], f[13]}')"
      done
    done
    echo "cpu $(head -1 /proc/stat)"
    echo "ticks $(getconf CLK_TCK) at $(date +%s.%N)"
  } >"$file"
}
watch_variant() {
  local variant=$1 cli="" server
  for _ in $(seq 1 600); do
    cli=$(pgrep -f "^convserve-cli perf --target=127.0.0.1:50051 --layer=$variant " | head -1)
    [ -n "$cli" ] && break
    sleep 0.1
  done
  [ -n "$cli" ] || { echo "no perf for $variant"; return; }
  server=$(pgrep -f "^convserve-server " | head -1)
  sleep 1.1  # past the 1 s warm-up
  snapshot "$O/threads_${variant}_0.txt" "$server" "$cli"
  perf record -F 999 -p "$server,$cli" -o "/tmp/perf_$variant.data" -- sleep "$WINDOW_S" \
    >"$O/perf_record_$variant.log" 2>&1 || sleep "$WINDOW_S"
  snapshot "$O/threads_${variant}_1.txt" "$server" "$cli"
  echo "watched $variant: server $server client $cli"
}
(for v in batched eager unbatched; do watch_variant $v; done) >"$O/watch.log" 2>&1 &
watcher=$!
batching_check cuda 64 cuda
wait $watcher
cat "$O/watch.log"
for v in batched eager unbatched; do
  [ -f "/tmp/perf_$v.data" ] || continue
  perf report -i "/tmp/perf_$v.data" --stdio --sort comm,dso --percent-limit 1 \
    >"$O/perf_dso_$v.txt" 2>&1
  perf report -i "/tmp/perf_$v.data" --stdio --sort comm,sym --percent-limit 0.3 \
    >"$O/perf_sym_$v.txt" 2>&1
  perf report -i "/tmp/perf_$v.data" --stdio --sort comm,tid --percent-limit 1 \
    >"$O/perf_tid_$v.txt" 2>&1
done
python3 "$here/thread_cpu.py" "$O" | tee "$O/thread_cpu.txt"
device_end
