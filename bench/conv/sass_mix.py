#!/usr/bin/env python3
"""Summarises Nsight Compute's source page (SASS CSV, as `run_h100.sh source` writes it).

Prints the stall reasons over all samples, the executed instruction mix by opcode, and the
hottest loop: the instructions executed as often as the most frequent HMMA/HGMMA count, with
their stall samples, so a main loop's instructions per iteration can be read off directly.

  python3 bench/conv/sass_mix.py FILE.sass.csv[.xz] [--loop]
"""
import argparse
import collections
import csv
import lzma


def read_rows(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    # The first line names the kernel; the second is the header.
    header = rows[1]
    return {h: i for i, h in enumerate(header)}, rows[2:]


def number(row, index, key):
    try:
        return float(row[index[key]])
    except (KeyError, ValueError, IndexError):
        return 0.0


def opcode(source):
    words = source.split()
    if not words:
        return ""
    op = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
    return op.split(".")[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--loop", action="store_true", help="print the hottest loop's SASS")
    args = parser.parse_args()
    index, rows = read_rows(args.csv)
    samples_key = "Warp Stall Sampling (All Samples)"
    executed_key = "Instructions Executed"
    total_samples = sum(number(r, index, samples_key) for r in rows) or 1.0
    total_executed = sum(number(r, index, executed_key) for r in rows) or 1.0
    print(f"instructions in the kernel: {len(rows)}; executed: {total_executed:.0f}; "
          f"stall samples: {total_samples:.0f}")

    stalls = [h for h in index if h.startswith("stall_") and "Not Issued" not in h]
    by_stall = {s: sum(number(r, index, s) for r in rows) for s in stalls}
    print("\nstall reason                 samples  share")
    for name, value in sorted(by_stall.items(), key=lambda kv: -kv[1])[:10]:
        print(f"{name:28s} {value:8.0f} {100 * value / total_samples:5.1f}%")

    executed = collections.Counter()
    sampled = collections.Counter()
    for r in rows:
        op = opcode(r[index["Source"]])
        executed[op] += number(r, index, executed_key)
        sampled[op] += number(r, index, samples_key)
    print("\nopcode      executed  share  stall share")
    for op, value in executed.most_common(20):
        print(f"{op:10s} {value:10.0f} {100 * value / total_executed:5.1f}% "
              f"{100 * sampled[op] / total_samples:5.1f}%")

    mma_counts = collections.Counter(
        number(r, index, executed_key) for r in rows
        if opcode(r[index["Source"]]) in ("HMMA", "HGMMA"))
    if not mma_counts:
        return
    loop_count = mma_counts.most_common(1)[0][0]
    first = next(i for i, r in enumerate(rows) if number(r, index, executed_key) == loop_count)
    last = max(i for i, r in enumerate(rows) if number(r, index, executed_key) == loop_count)
    body = rows[first:last + 1]
    # Per iteration: every instruction of the span, weighted by how often it ran against the
    # loop's own count (branches inside the loop run some instructions less often).
    per_iteration = sum(number(r, index, executed_key) for r in body) / loop_count
    mma = sum(1 for r in body if opcode(r[index["Source"]]) in ("HMMA", "HGMMA"))
    print(f"\nhottest loop: {last - first + 1} instructions at offsets {first}-{last}, "
          f"{per_iteration:.0f} executed per iteration, of which {mma} MMA")
    if args.loop:
        for r in body:
            print(f"{number(r, index, executed_key):9.0f} {number(r, index, samples_key):5.0f}  "
                  f"{r[index['Source']].strip()}")


if __name__ == "__main__":
    main()
