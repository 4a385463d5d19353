#!/usr/bin/env python3
"""Same-call A/B of two conv_bench builds on the same rows: per row and N, the geometric mean
over layers of old time / new time (each side the faster of its rounds), and the same for the
best row per layer.

  python3 compare_ab.py old_1.json,old_2.json new_1.json,new_2.json [row ...]
"""
import json
import math
import sys


def load(paths):
    runs = []
    for path in paths.split(","):
        results = json.load(open(path))["results"]
        runs.append({(r["shape"], r["n"], r["dtype"]): r["configs"] for r in results})
    return {k: {c: min(run[k][c] for run in runs) for c in runs[0][k] if runs[0][k][c]}
            for k in runs[0]}


def geo(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def main():
    old, new = load(sys.argv[1]), load(sys.argv[2])
    rows = sys.argv[3:] or sorted(next(iter(old.values())).keys())
    batches = sorted({k[1] for k in old})
    print("| row | " + " | ".join(f"N = {n}" for n in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for row in rows + ["(best row per layer)"]:
        cells = []
        for n in batches:
            ratios = []
            for k in old:
                if k[1] != n:
                    continue
                if row.startswith("("):
                    ratios.append(min(old[k].values()) / min(new[k].values()))
                elif row in old[k] and row in new[k]:
                    ratios.append(old[k][row] / new[k][row])
            cells.append(f"{geo(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})")
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
