#!/usr/bin/env python3
"""Cores used per process and per thread name over each watched window of device_run.sh.

    thread_cpu.py RESULTS_DIR   (holding threads_<variant>_0.txt and threads_<variant>_1.txt)
"""
import collections
import os
import sys


def read(path):
    threads, cpu, ticks, when = {}, None, 100, 0.0
    for line in open(path):
        fields = line.split()
        if fields[0] == "cpu":
            cpu = [int(x) for x in fields[2:]]
        elif fields[0] == "ticks":
            ticks, when = int(fields[1]), float(fields[3])
        elif len(fields) == 5:
            pid, tid, comm, utime, stime = fields
            threads[(pid, tid)] = (comm, int(utime), int(stime))
    return threads, cpu, ticks, when


def main(folder):
    for variant in ["batched", "eager", "unbatched"]:
        paths = [os.path.join(folder, f"threads_{variant}_{i}.txt") for i in (0, 1)]
        if not all(os.path.exists(p) for p in paths):
            continue
        (before, cpu0, ticks, t0), (after, cpu1, _, t1) = (read(p) for p in paths)
        seconds = t1 - t0
        pids = sorted({pid for pid, _ in after})
        print(f"== {variant}: {seconds:.2f} s")
        if cpu0 and cpu1:
            total = sum(cpu1) - sum(cpu0)
            idle = (cpu1[3] + cpu1[4]) - (cpu0[3] + cpu0[4])
            print(f"machine busy: {(total - idle) / ticks / seconds:.2f} cores "
                  f"of {total / ticks / seconds:.1f}")
        for pid in pids:
            by_name = collections.defaultdict(lambda: [0, 0, 0])
            for key, (comm, utime, stime) in after.items():
                if key[0] != pid:
                    continue
                _, u0, s0 = before.get(key, (comm, 0, 0))
                entry = by_name[comm]
                entry[0] += utime - u0
                entry[1] += stime - s0
                entry[2] += 1
            user = sum(e[0] for e in by_name.values())
            system = sum(e[1] for e in by_name.values())
            print(f"pid {pid}: {(user + system) / ticks / seconds:.2f} cores "
                  f"(user {user / ticks / seconds:.2f}, system {system / ticks / seconds:.2f})")
            for comm, (u, s, n) in sorted(by_name.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
                if u + s == 0:
                    continue
                print(f"  {comm:20s} threads {n:3d}  {(u + s) / ticks / seconds:5.2f} cores "
                      f"(user {u / ticks / seconds:.2f}, system {s / ticks / seconds:.2f})")


if __name__ == "__main__":
    main(sys.argv[1])
