"""convserve: Python client for the convserve conv2d gRPC service.

    import convserve
    client = convserve.Client("localhost:50051")
    client.load_layer("conv1", weight, bias, padding=1)   # numpy or torch, OIHW
    y = client.forward("conv1", x)                         # numpy in, numpy out; torch likewise

On the server's host, convserve.SharedMemoryForward passes tensors through POSIX shared memory.

PyTorch users: convserve.RemoteConv2d (an nn.Conv2d served remotely) and
convserve.swap_conv2d(model, client). torch is imported only when those are used.
"""

try:
    from convserve.v1 import conv2d_pb2 as pb  # generated from proto/ at build/install time
except ImportError as error:  # pragma: no cover - a source checkout without generated stubs
    raise ImportError(
        "convserve's gRPC stubs are not generated: run client/python/generate_stubs.sh, or "
        "install the package (pip install --no-build-isolation client/python)") from error

from convserve.client import Client, ForwardResult
from convserve.errors import (AlreadyExistsError, CancelledError, ConvserveError,
                              DeadlineExceededError, FailedPreconditionError,
                              InvalidArgumentError, NotFoundError, PermissionDeniedError,
                              ResourceExhaustedError, UnavailableError)
from convserve.shared_memory import SharedMemoryForward
from convserve.tensors import from_bfloat16_bits, to_bfloat16_bits

__version__ = "0.1.0"

_TORCH_NAMES = ("RemoteConv2d", "swap_conv2d", "release_remote_layers")


def __getattr__(name):
    # The torch drop-ins load torch lazily, so numpy-only users never pay for importing it.
    if name in _TORCH_NAMES:
        from convserve import torch_module
        return getattr(torch_module, name)
    raise AttributeError(f"module 'convserve' has no attribute {name!r}")


__all__ = ["Client", "ForwardResult", "SharedMemoryForward", "ConvserveError", "NotFoundError",
           "InvalidArgumentError", "AlreadyExistsError", "PermissionDeniedError",
           "FailedPreconditionError", "ResourceExhaustedError", "UnavailableError",
           "DeadlineExceededError", "CancelledError", "to_bfloat16_bits", "from_bfloat16_bits",
           "pb", *_TORCH_NAMES]
