#!/usr/bin/python3
"""Writes convserve's demo model repository: random weights, nothing downloaded.

    scripts/make-demo-repository.py [OUT_DIR] [--seed N] [--force] [--layers NAME,...]

OUT_DIR (default: demo-repository/ at the repository root) gets one sub-directory per layer (the
demo layers, or those named by --layers, which may also name the benchmark-only layers):
  config.pbtxt  text-format convserve.v1.LayerSpec
  weights.npy   [out_channels, in_channels / groups, kh, kw] (OIHW) in the layer's dtype;
                bf16 as uint16 raw bits, since NumPy has no bfloat16
  bias.npy      [out_channels], only for layers with has_bias: true
Needs only Debian's python3 and python3-numpy.
"""

import argparse
import os
import shutil
import sys

import numpy as np

# name -> spec. Shapes are ResNet-like, small enough for the CPU reference backend.
DEMO_LAYERS = {
    # The layer of the batching benchmark: 1x64x56x56 FP16 3x3.
    "demo_conv3x3": dict(in_channels=64, out_channels=64, kernel=(3, 3), padding=(1, 1),
                         dtype="FP16", has_bias=True, activation="RELU", input_size=(56, 56),
                         warmup_batch_sizes=[1, 8, 32]),
    # FP32 with exact FP32 math: the precision-sensitive path.
    "demo_conv1x1_fp32": dict(in_channels=64, out_channels=128, kernel=(1, 1), dtype="FP32",
                              precision="EXACT_FP32", has_bias=True, activation="NONE",
                              input_size=(56, 56), warmup_batch_sizes=[1, 8]),
    # Depthwise, strided, BF16, SiLU: the grouped path.
    "demo_dw3x3_bf16": dict(in_channels=64, out_channels=64, kernel=(3, 3), stride=(2, 2),
                            padding=(1, 1), groups=64, dtype="BF16", has_bias=False,
                            activation="SILU", input_size=(56, 56), warmup_batch_sizes=[1, 8]),
}

# Written only when --layers names them: layers of the serving benchmarks (bench/).
BENCH_LAYERS = {
    # The multi-GPU benchmark's GPU-bound layer. Its request and reply are demo_conv3x3's bytes
    # (2048x7x7 fp32 = 64x56x56 fp16 = 401 KB), so the same gRPC front-end cost, with 16x the
    # FLOPs on exact-FP32 FFMA (a tenth or less of the fp16 tensor-core rate): one GPU, not the
    # front-end, is the bottleneck (bench/multi_gpu/NOTES.md). 151 MB of weights.
    "bench_conv3x3_2048_fp32": dict(in_channels=2048, out_channels=2048, kernel=(3, 3),
                                    padding=(1, 1), dtype="FP32", precision="EXACT_FP32",
                                    has_bias=False, activation="NONE", input_size=(7, 7),
                                    warmup_batch_sizes=[1, 8, 32]),
    # Its stand-in for dry runs on the CPU reference backend: the same kind of layer, 64
    # channels, so that the reference computes it in about a millisecond.
    "bench_conv3x3_64_fp32": dict(in_channels=64, out_channels=64, kernel=(3, 3),
                                  padding=(1, 1), dtype="FP32", precision="EXACT_FP32",
                                  has_bias=False, activation="NONE", input_size=(7, 7),
                                  warmup_batch_sizes=[1, 8, 32]),
    # The front-end benchmark's layer: a 1x1 conv on 8x4x4 fp16 (256-byte tensors), so that
    # the reference's compute is negligible and req/s measures the server's per-call cost
    # (gRPC, validation, batcher, executor hand-over) on any backend.
    "bench_tiny_1x1": dict(in_channels=8, out_channels=8, kernel=(1, 1), dtype="FP16",
                           has_bias=False, activation="NONE", input_size=(4, 4),
                           warmup_batch_sizes=[1, 8, 32]),
}


def size2d(field, hw):
    return f"{field} {{ h: {hw[0]} w: {hw[1]} }}\n"


def config_text(name, spec):
    text = f'name: "{name}"\n'
    text += f"in_channels: {spec['in_channels']}\nout_channels: {spec['out_channels']}\n"
    text += size2d("kernel", spec["kernel"])
    for field in ("stride", "padding", "dilation"):
        if field in spec:
            text += size2d(field, spec[field])
    if spec.get("groups", 1) != 1:
        text += f"groups: {spec['groups']}\n"
    text += f"dtype: DATA_TYPE_{spec['dtype']}\n"
    if "precision" in spec:
        text += f"precision: PRECISION_{spec['precision']}\n"
    text += f"has_bias: {'true' if spec['has_bias'] else 'false'}\n"
    text += f"activation: ACTIVATION_{spec['activation']}\n"
    text += size2d("input_size", spec["input_size"])
    for n in spec["warmup_batch_sizes"]:
        text += f"warmup_batch_sizes: {n}\n"
    return text


def to_dtype(values, dtype):
    """float32 values in the layer's storage type; bf16 rounds to nearest even, as uint16."""
    values = values.astype(np.float32)
    if dtype == "FP32":
        return values
    if dtype == "FP16":
        return values.astype(np.float16)
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_layer(out_dir, name, spec, rng):
    layer_dir = os.path.join(out_dir, name)
    os.makedirs(layer_dir)
    groups = spec.get("groups", 1)
    kh, kw = spec["kernel"]
    shape = (spec["out_channels"], spec["in_channels"] // groups, kh, kw)
    fan_in = shape[1] * kh * kw
    weights = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)  # He initialisation
    np.save(os.path.join(layer_dir, "weights.npy"), to_dtype(weights, spec["dtype"]))
    if spec["has_bias"]:
        bias = rng.uniform(-0.1, 0.1, spec["out_channels"])
        np.save(os.path.join(layer_dir, "bias.npy"), to_dtype(bias, spec["dtype"]))
    with open(os.path.join(layer_dir, "config.pbtxt"), "w") as f:
        f.write(config_text(name, spec))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=os.path.join(root, "demo-repository"))
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")
    parser.add_argument("--layers", default=",".join(DEMO_LAYERS),
                        help="comma-separated layers to write (default: the demo layers); "
                        f"benchmark-only layers: {', '.join(BENCH_LAYERS)}")
    args = parser.parse_args()
    known = {**DEMO_LAYERS, **BENCH_LAYERS}
    names = [name for name in args.layers.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        sys.exit(f"make-demo-repository: unknown layer(s) {', '.join(unknown) or '(none given)'}; "
                 f"known: {', '.join(known)}")

    if os.path.exists(args.out_dir):
        if not args.force:
            sys.exit(f"make-demo-repository: {args.out_dir} exists (use --force to replace it)")
        shutil.rmtree(args.out_dir)
    # Write next to the target and rename, so a reader never sees half a repository.
    staging = args.out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    rng = np.random.default_rng(args.seed)
    for name in names:
        write_layer(staging, name, known[name], rng)
    os.rename(staging, args.out_dir)
    print(f"make-demo-repository: wrote {', '.join(names)} to {args.out_dir}")


if __name__ == "__main__":
    main()
