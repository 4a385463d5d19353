#!/usr/bin/env python3
"""Splits a kernel's executed SASS (an Nsight Compute source page, CSV or .xz) at its first
LDGSTS, first HMMA and last HMMA: instructions per warp and stall samples before the first copy
(decoding), up to the first multiply (the pipeline's prologue), the main loop's span, and after
it (the epilogue). For kernels that each block runs once through (N = 1).

  python3 path_split.py FILE.sass.csv[.xz] WARPS
"""
import csv
import lzma
import sys


def main():
    path, warps = sys.argv[1], int(sys.argv[2])
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt") as f:
        reader = csv.reader(f)
        next(reader)
        header = next(reader)
        executed = header.index("Instructions Executed")
        source = header.index("Source")
        samples = header.index("Warp Stall Sampling (All Samples)")
        rows = [(r[source].strip(), int(r[executed] or 0), int(r[samples] or 0))
                for r in reader if len(r) > executed]
    total = sum(r[1] for r in rows)
    total_samples = sum(r[2] for r in rows)
    first_copy = next(i for i, r in enumerate(rows) if r[0].startswith("LDGSTS"))
    first_mma = next(i for i, r in enumerate(rows) if "HMMA" in r[0])
    last_mma = max(i for i, r in enumerate(rows) if "HMMA" in r[0])
    parts = [("decoding (before the first copy)", 0, first_copy),
             ("prologue (to the first multiply)", first_copy, first_mma),
             ("main loop's span", first_mma, last_mma + 1),
             ("epilogue (after the last multiply)", last_mma + 1, len(rows))]
    print("| part | instructions per warp | share | stall samples | static instructions |")
    print("|---|---|---|---|---|")
    for name, a, b in parts:
        e = sum(r[1] for r in rows[a:b])
        s = sum(r[2] for r in rows[a:b])
        print(f"| {name} | {e / warps:.0f} | {100 * e / total:.0f}% "
              f"| {100 * s / total_samples:.0f}% | {b - a} |")
    print(f"| all | {total / warps:.0f} | | | {len(rows)} |")


if __name__ == "__main__":
    main()
