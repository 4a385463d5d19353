#!/usr/bin/env python3
"""Markdown summary of a conv_bench JSON (plus, optionally, torch_cudnn_reference JSONs).

  python3 summarize.py bench.json [torch_cudnn.json ...] [--dtype fp16] [--family all|mma|hopper]
                       [--without=row,row,...]

Per shape and batch: our best configuration and time, cuDNN's best through the legacy API
(conv_bench), cuDNN through PyTorch, and the two ratios (> 1: we are faster); geometric means
last. With several PyTorch samples (say, one before and one after conv_bench), each layer takes
cuDNN's fastest: the competitor's time varies by a few percent from run to run, and the
fastest sample is the fair one to beat.

--family=mma takes, per layer, the best of the rows without "wgmma" in their name (issue 3's
mma.sync, few-channel, SIMT and depthwise kernels, which every GPU runs); --family=hopper the
best of the wgmma rows only. The default, all, is conv_bench's own best.

--without leaves the named rows out: the same run read as if the table lacked them, which is
how a run measures what newly added rows bring (no second run, no run-to-run noise).
"""
import json
import math
import sys


FAMILIES = {
    "all": lambda name: True,
    "mma": lambda name: "wgmma" not in name,
    "hopper": lambda name: "wgmma" in name,
}


def best_of_family(result, family, without=frozenset()):
    """(config, us) of the family's fastest row for one result, leaving out the rows in
    `without`; conv_bench's best for "all" with nothing left out."""
    if family == "all" and not without:
        return result["best_config"], result["best_us"]
    times = {c: us for c, us in result["configs"].items()
             if us is not None and math.isfinite(us) and FAMILIES[family](c) and c not in without}
    if not times:
        return None, None
    config = min(times, key=times.get)
    return config, times[config]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    dtype = "fp16"
    family = "all"
    without = frozenset()
    for a in sys.argv[1:]:
        if a.startswith("--dtype="):
            dtype = a.split("=", 1)[1]
        elif a.startswith("--family="):
            family = a.split("=", 1)[1]
        elif a.startswith("--without="):
            without = frozenset(filter(None, a.split("=", 1)[1].split(",")))
    if family not in FAMILIES:
        sys.exit(f"summarize.py: --family must be one of {', '.join(FAMILIES)}")
    bench = json.load(open(args[0]))
    torch = {}
    for path in args[1:]:
        for r in json.load(open(path))["results"]:
            key = (r["shape"], r["n"], r["dtype"])
            torch[key] = min(torch.get(key, math.inf), r["best_us"])
    print("| shape | N | best config | ours us | TFLOP/s | cuDNN legacy us | x legacy | "
          "cuDNN torch us | x torch |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = {}
    for r in bench["results"]:
        if r["dtype"] != dtype:
            continue
        config, us = best_of_family(r, family, without)
        if us is None:
            continue
        # null: conv_bench ran without cuDNN (--no-cudnn).
        legacy = min(r["cudnn_nhwc_us"] or math.inf, r["cudnn_nchw_us"] or math.inf)
        t = torch.get((r["shape"], r["n"], r["dtype"]))
        tf = r["gflop"] * 1e9 / us * 1e-6
        x_legacy = legacy / us
        x_torch = t / us if t else float("nan")
        ratios.setdefault(r["n"], []).append((x_legacy, x_torch))
        print("| %s | %d | %s | %.1f | %.1f | %.1f | %.2f | %s | %s |" % (
            r["shape"], r["n"], config, us, tf, legacy, x_legacy,
            "%.1f" % t if t else "-", "%.2f" % x_torch if t else "-"))
    print()
    print("| N | geo-mean x cuDNN legacy | geo-mean x cuDNN torch | worst x cuDNN torch |")
    print("|---|---|---|---|")
    for n, rs in sorted(ratios.items()):
        gl = math.exp(sum(math.log(a) for a, _ in rs) / len(rs))
        tt = [b for _, b in rs if not math.isnan(b)]
        gt = math.exp(sum(math.log(b) for b in tt) / len(tt)) if tt else float("nan")
        print("| %d | %.3f | %.3f | %.3f |" % (n, gl, gt, min(tt) if tt else float("nan")))


if __name__ == "__main__":
    main()
