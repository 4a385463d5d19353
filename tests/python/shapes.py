"""Reads tests/data/*.tsv shape tables and builds float64 references with torch."""

import collections
import os

import numpy as np
import torch
import torch.nn.functional as F

Shape = collections.namedtuple(
    "Shape", "name n c h w k r s stride_h stride_w pad_h pad_w dil_h dil_w groups bias")

# Relative L2 error bounds against the fp64 reference (the project's correctness bar).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def read_shapes(filename="coverage.tsv"):
    path = os.path.join(os.environ.get("CONVSERVE_TEST_DATA", os.path.join(
        os.path.dirname(__file__), "..", "data")), filename)
    shapes = []
    with open(path) as table:
        for line in table:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, *numbers = line.split("\t")
            shapes.append(Shape(name, *(int(v) for v in numbers)))
    if not shapes:
        raise RuntimeError(f"no shapes in {path}")
    return shapes


def seed():
    """A fresh seed per run (printed, and reproducible with CONVSERVE_TEST_SEED)."""
    value = int(os.environ.get("CONVSERVE_TEST_SEED", np.random.SeedSequence().entropy % 2**31))
    print(f"CONVSERVE_TEST_SEED={value}")
    return value


def random_problem(shape, dtype, generator, bias=None):
    """(x, weight, bias or None) as torch tensors of `dtype` for one coverage row."""
    with_bias = shape.bias if bias is None else bias
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, generator=generator).to(dtype)
    weight = torch.randn(shape.k, shape.c // shape.groups, shape.r, shape.s,
                         generator=generator).to(dtype)
    b = torch.randn(shape.k, generator=generator).to(dtype) if with_bias else None
    return x, weight, b


def conv_kwargs(shape):
    return dict(stride=(shape.stride_h, shape.stride_w), padding=(shape.pad_h, shape.pad_w),
                dilation=(shape.dil_h, shape.dil_w), groups=shape.groups)


def reference(x, weight, bias, **kwargs):
    """torch.nn.functional.conv2d in float64 from the very same (rounded) inputs."""
    return F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                    **kwargs)


def rel_l2(actual, expected):
    actual = torch.as_tensor(actual).double()
    expected = expected.double()
    return (torch.linalg.vector_norm(actual - expected) /
            torch.linalg.vector_norm(expected).clamp_min(1e-300)).item()
