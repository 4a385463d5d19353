#!/usr/bin/env python3
"""cuDNN through PyTorch (its v8/v9 graph API with benchmark=True), the stronger cuDNN baseline.

conv_bench reaches cuDNN through the legacy cudnnFindConvolutionForwardAlgorithmEx API, which on
Hopper does not expose every engine that PyTorch's path uses. This script times the same shapes
through torch.nn.functional.conv2d (channels_last and contiguous NCHW, best of the two), with
triton.testing.do_bench (median, L2 cleared between runs), and writes a table and JSON.

  python3 torch_cudnn_reference.py SHAPES.tsv --batches 1,8,32 --dtypes fp16 --json out.json
"""
import argparse
import json

import torch
import triton.testing


def read_shapes(path):
    shapes = []
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        f = line.split("\t")
        name, c, h, w, k, r, s, stride, pad = f[0], *map(int, f[1:9])
        shapes.append((name, c, h, w, k, r, s, stride, pad))
    return shapes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--dtypes", default="fp16")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    types = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    results = []
    print("%-22s %3s %-4s %10s %10s %8s" % ("shape", "N", "type", "nhwc_us", "nchw_us", "TFLOP/s"))
    for dtype in args.dtypes.split(","):
        for n in map(int, args.batches.split(",")):
            for name, c, h, w, k, r, s, stride, pad in read_shapes(args.shapes):
                x = torch.randn(n, c, h, w, device="cuda", dtype=types[dtype])
                wt = torch.randn(k, c, r, s, device="cuda", dtype=types[dtype])
                times = {}
                for fmt, mf in (("nhwc", torch.channels_last), ("nchw", torch.contiguous_format)):
                    xf, wf = x.to(memory_format=mf), wt.to(memory_format=mf)
                    fn = lambda: torch.nn.functional.conv2d(xf, wf, stride=stride, padding=pad)
                    times[fmt] = triton.testing.do_bench(fn, return_mode="median") * 1e3
                p = (h + 2 * pad - r) // stride + 1
                q = (w + 2 * pad - s) // stride + 1
                flops = 2.0 * n * p * q * k * c * r * s
                best = min(times.values())
                print("%-22s %3d %-4s %10.1f %10.1f %8.1f" %
                      (name, n, dtype, times["nhwc"], times["nchw"], flops / best * 1e-6))
                results.append({"shape": name, "n": n, "dtype": dtype, "nhwc_us": times["nhwc"],
                                "nchw_us": times["nchw"], "best_us": best})
    if args.json:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "cudnn": torch.backends.cudnn.version(), "results": results},
                  open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
