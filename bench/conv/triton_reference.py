#!/usr/bin/env python3
"""Issue 3's starting point, measured: a Triton implicit-GEMM conv2d (NCHW, fp32 operands with a
TF32 dot, BLOCK_M/N/K autotuned over three 64 x 64 x 32-class configurations), timed on the
same shapes as conv_bench, so "5x the Triton reference at N = 32" is a per-shape ratio rather
than a quoted range. Written for this project from the issue's description.

Each shape's result is checked against torch's fp32 conv2d (TF32 off) before it is timed
(relative L2 below the TF32 tolerance, 1e-3). With --ours, prints our best time per shape from a
conv_bench JSON (--family as in summarize.py) as a multiple of the reference's TFLOP/s.

  python3 triton_reference.py SHAPES.tsv --batches 32 [--json out.json]
                              [--ours bench.json --dtype fp16 --family mma]
"""
import argparse
import json
import math

import torch
import triton
import triton.language as tl
import triton.testing

from summarize import best_of_family
from torch_cudnn_reference import read_shapes


CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
]


@triton.autotune(configs=CONFIGS, key=["N", "C", "H", "W", "K", "R", "S", "STRIDE", "PAD"])
@triton.jit
def conv2d_nchw_kernel(x_ptr, w_ptr, y_ptr, N, C, H, W, K, R, S, P, Q, STRIDE, PAD,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # GEMM view: rows m = (image, p, q), columns = output channels, reduction = (c, r, s) in
    # OIHW weight order, so the weight is a row-major [K, C*R*S] matrix.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    image = rows // (P * Q)
    pq = rows % (P * Q)
    ih0 = (pq // Q) * STRIDE - PAD
    iw0 = (pq % Q) * STRIDE - PAD
    row_ok = rows < N * P * Q
    col_ok = cols < K
    gemm_k = C * R * S
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, gemm_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        c = ks // (R * S)
        rs = ks % (R * S)
        ih = ih0[:, None] + (rs // S)[None, :]
        iw = iw0[:, None] + (rs % S)[None, :]
        a_ok = (row_ok[:, None] & (ks < gemm_k)[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) &
                (iw < W))
        a_off = ((image[:, None].to(tl.int64) * C + c[None, :]) * H + ih) * W + iw
        a = tl.load(x_ptr + a_off, mask=a_ok, other=0.0)
        b_ok = (ks < gemm_k)[:, None] & col_ok[None, :]
        b = tl.load(w_ptr + cols[None, :].to(tl.int64) * gemm_k + ks[:, None], mask=b_ok,
                    other=0.0)
        acc += tl.dot(a, b, input_precision="tf32")
    out_off = ((image[:, None].to(tl.int64) * K + cols[None, :]) * P + (pq // Q)[:, None]) * Q + \
        (pq % Q)[:, None]
    tl.store(y_ptr + out_off, acc, mask=row_ok[:, None] & col_ok[None, :])


def conv2d(x, w, stride, pad):
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p = (h + 2 * pad - r) // stride + 1
    q = (wd + 2 * pad - s) // stride + 1
    y = torch.empty(n, k, p, q, device=x.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(n * p * q, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_N"]))
    conv2d_nchw_kernel[grid](x, w, y, n, c, h, wd, k, r, s, p, q, stride, pad)
    return y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes")
    ap.add_argument("--batches", default="32")
    ap.add_argument("--json", default="")
    ap.add_argument("--ours", default="", help="conv_bench JSON to compare with")
    ap.add_argument("--dtype", default="fp16", help="our dtype in --ours")
    ap.add_argument("--family", default="mma", help="rows of --ours, as in summarize.py")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ours = {}
    if args.ours:
        for result in json.load(open(args.ours))["results"]:
            if result["dtype"] == args.dtype:
                ours[(result["shape"], result["n"])] = best_of_family(result, args.family)
    results = []
    ratios = []
    print("| shape | N | reference us | TFLOP/s | rel L2 | ours us | TFLOP/s | x reference |")
    print("|---|---|---|---|---|---|---|---|")
    for n in map(int, args.batches.split(",")):
        for name, c, h, w, k, r, s, stride, pad in read_shapes(args.shapes):
            x = torch.randn(n, c, h, w, device="cuda")
            wt = torch.randn(k, c, r, s, device="cuda")
            y = conv2d(x, wt, stride, pad)
            want = torch.nn.functional.conv2d(x.double(), wt.double(), stride=stride, padding=pad)
            rel = ((y.double() - want).norm() / want.norm()).item()
            if not rel < 1e-3:
                raise SystemExit(f"{name} N={n}: relative L2 {rel:.2e} over the TF32 tolerance")
            us = triton.testing.do_bench(lambda: conv2d(x, wt, stride, pad),
                                         return_mode="median") * 1e3
            p = (h + 2 * pad - r) // stride + 1
            q = (w + 2 * pad - s) // stride + 1
            flops = 2.0 * n * p * q * k * c * r * s
            row = {"shape": name, "n": n, "us": us, "tflops": flops / us * 1e-6, "rel_l2": rel}
            line = f"| {name} | {n} | {us:.1f} | {row['tflops']:.1f} | {rel:.1e} |"
            config, our_us = ours.get((name, n), (None, None))
            if our_us:
                ratios.append(us / our_us)
                line += f" {our_us:.1f} | {flops / our_us * 1e-6:.1f} | {us / our_us:.2f} |"
            else:
                line += " | | |"
            print(line, flush=True)
            results.append(row)
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\ngeometric mean x reference ({args.family} rows, {args.dtype}): {geo:.2f} "
              f"(worst {min(ratios):.2f}, best {max(ratios):.2f})")
    if args.json:
        json.dump({"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                   "results": results}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
