#!/usr/bin/env python3
"""Same-call A/B of two conv_bench builds on the same rows: per row and N, the geometric mean
over layers of old time / new time (each side the faster of its rounds), then the same for the
best row per layer within each kernel family, and over all rows.

  python3 compare_ab.py old_1.json,old_2.json new_1.json,new_2.json [row ...]
"""
import json
import math
import sys

# Families by row name, for the best-row-per-layer lines: a change to one kind shows in its
# family's best, with the unchanged families as the run's control.
FAMILIES = {
    "mma.sync": lambda c: "wgmma" not in c,
    "mma.sync, unsplit": lambda c: "wgmma" not in c and "_sk" not in c,
    "mma.sync, split-K": lambda c: "wgmma" not in c and "_sk" in c,
    "plain wgmma": lambda c: c.endswith("_wgmma"),
    "warp-specialised wgmma": lambda c: c.endswith("_wgmma_ws"),
    "TMA wgmma": lambda c: "_wgmma_tma" in c,
    "any": lambda c: True,
}


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
    lines = [(row, lambda k, row=row: (old[k].get(row), new[k].get(row))) for row in rows]
    for family, member in FAMILIES.items():

        def best(k, member=member):
            olds = [t for c, t in old[k].items() if member(c)]
            news = [t for c, t in new[k].items() if member(c)]
            return (min(olds), min(news)) if olds and news else (None, None)

        kind = "row of any kind" if family == "any" else f"{family} row"
        lines.append((f"(best {kind} per layer)", best))
    for label, times in lines:
        cells = []
        for n in batches:
            ratios = [o / w for o, w in (times(k) for k in old if k[1] == n) if o and w]
            cells.append(f"{geo(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
