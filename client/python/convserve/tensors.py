"""Converts numpy arrays and torch tensors to and from the wire's Tensor message.

The wire always names shapes [N, C, H, W] and says separately how the bytes are ordered (NCHW
or NHWC). Here an array's layout is read from its strides: a 4-D array or tensor whose memory
is NHWC (torch.channels_last, or a numpy array made with x.transpose(0, 3, 1, 2) from NHWC
data) goes on the wire as NHWC without a transposing copy, and the result comes back in the
same memory format. Element types: float32, float16 and bfloat16 (torch.bfloat16, or numpy
uint16 holding raw bfloat16 bits, since numpy has no bfloat16).

torch is optional: numpy-only users never import it.
"""

import sys

import grpc
import numpy as np

from convserve.errors import ConvserveError
from convserve.v1 import conv2d_pb2 as pb

_NUMPY_DTYPES = {
    np.dtype(np.float32): pb.DATA_TYPE_FP32,
    np.dtype(np.float16): pb.DATA_TYPE_FP16,
    np.dtype(np.uint16): pb.DATA_TYPE_BF16,  # raw bfloat16 bits
}
_NUMPY_BY_WIRE = {wire: dtype for dtype, wire in _NUMPY_DTYPES.items()}

_DTYPE_NAMES = {
    "fp32": pb.DATA_TYPE_FP32, "float32": pb.DATA_TYPE_FP32, "float": pb.DATA_TYPE_FP32,
    "fp16": pb.DATA_TYPE_FP16, "float16": pb.DATA_TYPE_FP16, "half": pb.DATA_TYPE_FP16,
    "bf16": pb.DATA_TYPE_BF16, "bfloat16": pb.DATA_TYPE_BF16,
}
_LAYOUT_NAMES = {"nchw": pb.LAYOUT_NCHW, "nhwc": pb.LAYOUT_NHWC, "channels_last": pb.LAYOUT_NHWC}

if sys.byteorder != "little":  # torch tensors are serialised in native byte order
    raise ImportError("convserve's client needs a little-endian host")


def _torch():
    """The torch module when it is installed and already imported by the caller, else None."""
    return sys.modules.get("torch")


def is_torch_tensor(x):
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_wire_dtypes(torch):
    return {torch.float32: pb.DATA_TYPE_FP32, torch.float16: pb.DATA_TYPE_FP16,
            torch.bfloat16: pb.DATA_TYPE_BF16}


def wire_dtype(dtype):
    """Maps a torch dtype, numpy dtype or name ('fp16', 'bfloat16', ...) to pb.DataType."""
    if isinstance(dtype, int) and dtype in pb.DataType.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    torch = _torch()
    if torch is not None and isinstance(dtype, torch.dtype):
        found = _torch_wire_dtypes(torch).get(dtype)
    else:
        try:
            found = _NUMPY_DTYPES.get(np.dtype(dtype).newbyteorder("="))
        except TypeError:
            found = None
    if found is None:
        raise TypeError(f"convserve supports float32, float16 and bfloat16 (torch.bfloat16 or "
                        f"numpy uint16 bits), not {dtype!r}")
    return found


def wire_layout(layout):
    """Maps 'nchw' / 'nhwc' / 'channels_last', a torch memory format or pb.Layout to pb.Layout."""
    if layout is None:
        return pb.LAYOUT_DEFAULT
    if isinstance(layout, int) and layout in pb.Layout.values():
        return layout
    torch = _torch()
    if torch is not None and isinstance(layout, torch.memory_format):
        if layout == torch.channels_last:
            return pb.LAYOUT_NHWC
        if layout == torch.contiguous_format:
            return pb.LAYOUT_NCHW
    if isinstance(layout, str) and layout.lower() in _LAYOUT_NAMES:
        return _LAYOUT_NAMES[layout.lower()]
    raise ValueError(f"unknown layout {layout!r}: use 'nchw', 'nhwc' or torch.channels_last")


def memory_layout(shape, strides):
    """pb.LAYOUT_NHWC when [N, C, H, W] `shape` with element `strides` is stored NHWC."""
    n, c, h, w = shape
    nchw = (c * h * w, h * w, w, 1)
    nhwc = (h * w * c, 1, w * c, c)
    strides = tuple(strides)
    # Exact strides first: torch gives a channels_last tensor with C == 1 the strides
    # (H*W, 1, W, 1), which also pass the size-1-insensitive check for NCHW below.
    if strides == nhwc and strides != nchw:
        return pb.LAYOUT_NHWC

    def matches(expected):
        return all(size == 1 or s == e for size, s, e in zip(shape, strides, expected))

    if not matches(nchw) and matches(nhwc):
        return pb.LAYOUT_NHWC
    return pb.LAYOUT_NCHW


def to_bfloat16_bits(array):
    """float32 numpy array -> uint16 array of bfloat16 bits, rounded to nearest even."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    bits = values.view(np.uint32)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)


def from_bfloat16_bits(bits):
    """uint16 numpy array of bfloat16 bits -> float32 array."""
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(bits.shape)


class _Decoder:
    """Remembers what kind of object a request came from, to return the same kind."""

    __slots__ = ("torch_device", "dtype")

    def __init__(self, torch_device, dtype):
        self.torch_device = torch_device  # None for numpy
        self.dtype = dtype  # pb.DataType expected back


def encode(x):
    """Returns (pb.Tensor, decoder) for a 4-D numpy array or torch tensor."""
    if is_torch_tensor(x):
        return _encode_torch(x)
    return _encode_numpy(x)


def _check_rank(shape):
    if len(shape) != 4:
        raise ValueError(f"conv2d input must be 4-D [N, C, H, W], got shape {tuple(shape)}")


def _encode_numpy(x):
    x = np.asarray(x)
    _check_rank(x.shape)
    dtype = wire_dtype(x.dtype)
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    itemsize = x.dtype.itemsize
    if any(s % itemsize for s in x.strides):
        x = np.ascontiguousarray(x)
    layout = memory_layout(x.shape, [s // itemsize for s in x.strides])
    ordered = x.transpose(0, 2, 3, 1) if layout == pb.LAYOUT_NHWC else x
    tensor = pb.Tensor(dtype=dtype, layout=layout, shape=x.shape, data=ordered.tobytes())
    return tensor, _Decoder(None, dtype)


def _encode_torch(x):
    torch = _torch()
    _check_rank(x.shape)
    dtype = wire_dtype(x.dtype)
    layout = memory_layout(tuple(x.shape), x.stride())
    host = x.detach().to("cpu")
    ordered = host.permute(0, 2, 3, 1) if layout == pb.LAYOUT_NHWC else host
    ordered = ordered.contiguous()
    if x.dtype == torch.bfloat16:  # numpy has no bfloat16: ship the raw bits
        ordered = ordered.view(torch.int16)
    data = ordered.numpy().tobytes()
    tensor = pb.Tensor(dtype=dtype, layout=layout, shape=tuple(x.shape), data=data)
    return tensor, _Decoder(x.device, dtype)


def byte_size(shape, dtype):
    """Bytes of a tensor of `shape` and element type `dtype` (anything wire_dtype takes)."""
    return int(np.prod(shape, dtype=np.int64)) * _NUMPY_BY_WIRE[wire_dtype(dtype)].itemsize


def write(x, buffer, layout):
    """Copies a 4-D numpy array or torch tensor into `buffer` in `layout` (pb.Layout) order.

    `buffer` is writable and exactly x's size (e.g. a slice of a shared-memory mapping); the
    elements are copied once, transposed on the way when x's own layout differs. Returns
    (pb.DataType, decoder) as encode does.
    """
    _check_rank(x.shape)
    dtype = wire_dtype(x.dtype)
    n, c, h, w = (int(d) for d in x.shape)
    nhwc = layout == pb.LAYOUT_NHWC
    target = np.frombuffer(buffer, dtype=_NUMPY_BY_WIRE[dtype]).reshape(
        (n, h, w, c) if nhwc else (n, c, h, w))
    if is_torch_tensor(x):
        torch = _torch()
        if dtype == pb.DATA_TYPE_BF16:
            target = torch.from_numpy(target.view(np.int16)).view(torch.bfloat16)
        else:
            target = torch.from_numpy(target)
        source = x.detach()
        target.copy_(source.permute(0, 2, 3, 1) if nhwc else source)
        return dtype, _Decoder(x.device, dtype)
    x = np.asarray(x)
    target[...] = x.transpose(0, 2, 3, 1) if nhwc else x  # converts byte order, if need be
    return dtype, _Decoder(None, dtype)


def decode(tensor, decoder, data=None):
    """Turns the reply's pb.Tensor into the same kind of object the request was made from.

    `data`: where the elements are when not in tensor.data (a buffer at least their size, e.g.
    the output's shared-memory range); they are copied out of it.
    """
    shape = tuple(tensor.shape)
    if len(shape) != 4 or tensor.dtype != decoder.dtype:
        raise ConvserveError(grpc.StatusCode.INTERNAL,
                             f"malformed reply: shape {shape}, dtype {tensor.dtype}")
    n, k, p, q = shape
    np_dtype = _NUMPY_BY_WIRE[tensor.dtype]
    size = n * k * p * q * np_dtype.itemsize
    data = tensor.data if data is None else memoryview(data)[:size]
    if len(data) != size:
        raise ConvserveError(grpc.StatusCode.INTERNAL,
                             f"malformed reply: {len(data)} bytes for shape {shape}")
    nhwc = tensor.layout == pb.LAYOUT_NHWC
    stored = (n, p, q, k) if nhwc else shape
    # bytearray: one copy that makes the result writable (frombuffer on bytes is read-only).
    flat = np.frombuffer(bytearray(data), dtype=np_dtype).reshape(stored)
    if decoder.torch_device is None:
        return flat.transpose(0, 3, 1, 2) if nhwc else flat
    torch = _torch()
    if tensor.dtype == pb.DATA_TYPE_BF16:  # torch has no uint16: reinterpret the bits
        out = torch.from_numpy(flat.view(np.int16)).view(torch.bfloat16)
    else:
        out = torch.from_numpy(flat)
    if nhwc:
        out = out.permute(0, 3, 1, 2)  # NCHW shape, channels_last strides
    return out if decoder.torch_device.type == "cpu" else out.to(decoder.torch_device)


def encode_weights(weight, bias, dtype):
    """Returns (spec dtype, weight bytes, bias bytes or b"") in the layer's element type.

    `weight` is [out_channels, in_channels / groups, kH, kW] (OIHW); `dtype` None keeps the
    weights' own element type.
    """
    target = wire_dtype(dtype) if dtype is not None else wire_dtype(weight.dtype)
    weight_bytes = _tensor_bytes(weight, target)
    bias_bytes = b"" if bias is None else _tensor_bytes(bias, target)
    return target, weight_bytes, bias_bytes


def _tensor_bytes(x, target):
    if is_torch_tensor(x):
        torch = _torch()
        torch_dtype = {pb.DATA_TYPE_FP32: torch.float32, pb.DATA_TYPE_FP16: torch.float16,
                       pb.DATA_TYPE_BF16: torch.bfloat16}[target]
        host = x.detach().to(device="cpu", dtype=torch_dtype).contiguous()
        if torch_dtype == torch.bfloat16:
            host = host.view(torch.int16)
        return host.numpy().tobytes()
    x = np.asarray(x)
    source = wire_dtype(x.dtype)
    if source == target:
        return np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()
    as_float = from_bfloat16_bits(x) if source == pb.DATA_TYPE_BF16 else x.astype(np.float32)
    if target == pb.DATA_TYPE_BF16:
        return to_bfloat16_bits(as_float).astype("<u2").tobytes()
    return np.ascontiguousarray(as_float, dtype=_NUMPY_BY_WIRE[target].newbyteorder("<")).tobytes()
