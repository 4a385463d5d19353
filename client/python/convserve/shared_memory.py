"""convserve.SharedMemoryForward: forward passes whose tensors travel through POSIX shared memory.

For a client on the server's host (the server started with --allow_shared_memory): the input is
copied into a shared-memory object, the server reads it from there and writes the output back,
and the gRPC messages carry only where the tensors are (see docs/operations.md, "Tensors in
shared memory").

    with convserve.SharedMemoryForward(client, "conv1", (8, 3, 224, 224)) as conv1:
        y = conv1.forward(x)   # as client.forward("conv1", x)
"""

import threading
from multiprocessing import shared_memory

import grpc

from convserve import tensors
from convserve.errors import NotFoundError
from convserve.v1 import conv2d_pb2 as pb

_ALIGNMENT = 64  # where the output range starts in the object


def _output_shape(spec, shape):
    """[N, K, P, Q] that layer `spec` makes of an [N, C, H, W] input."""
    def size(extent, kernel, stride, padding, dilation):
        return (extent + 2 * padding - (dilation or 1) * (kernel - 1) - 1) // (stride or 1) + 1

    n, _, h, w = shape
    return (n, spec.out_channels,
            size(h, spec.kernel.h, spec.stride.h, spec.padding.h, spec.dilation.h),
            size(w, spec.kernel.w, spec.stride.w, spec.padding.w, spec.dilation.w))


class SharedMemoryForward:
    """Runs one layer on inputs of a fixed shape, passing them through shared memory.

    Creates a POSIX shared-memory object (multiprocessing.shared_memory) that holds one input
    of `shape` and its output, and registers it with the server; close() (or leaving a `with`
    block) unregisters it and removes the object. The server must run on this host.

    Args:
      client: a convserve.Client.
      layer: the name of a loaded layer; its spec gives the output's size.
      shape: the input's [N, C, H, W]; forward also takes inputs with fewer samples.
      dtype: the input's element type ('fp32', 'fp16', 'bf16', a torch or numpy dtype);
        default: the layer's.
      layout: how the input is stored in shared memory, 'nchw' (default), 'nhwc' or
        torch.channels_last; inputs stored the other way are transposed as they are copied in.
      output_layout: the output's layout; default: `layout`.
      name: the region's name on the server; default: the object's own name.
      timeout: default deadline in seconds for forward (None: the client's).

    Threads: one forward at a time per object (a lock makes the others wait); make one object
    per thread to run forwards concurrently. The server does not write the output of a call that
    has ended (timed out or cancelled) unless the call ends while the output is being written:
    after such a call, use a fresh object if a stray write would matter.
    """

    def __init__(self, client, layer, shape, *, dtype=None, layout="nchw", output_layout=None,
                 name=None, timeout=None):
        self.client = client
        self.layer = layer
        self.shape = tuple(int(d) for d in shape)
        if len(self.shape) != 4 or min(self.shape) < 1:
            raise ValueError(f"shape must be [N, C, H, W] of positive sizes, got {shape!r}")
        specs = [info.spec for info in client.list_layers(timeout=timeout)
                 if info.spec.name == layer]
        if not specs:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"no layer named '{layer}' is loaded")
        self.dtype = tensors.wire_dtype(specs[0].dtype if dtype is None else dtype)
        self.layout = tensors.wire_layout(layout)
        self.output_layout = (self.layout if output_layout is None
                              else tensors.wire_layout(output_layout))
        self.timeout = timeout
        self._sample_bytes = tensors.byte_size(self.shape[1:], self.dtype)
        input_bytes = self._sample_bytes * self.shape[0]
        output_shape = _output_shape(specs[0], self.shape)
        if min(output_shape) < 1:
            raise ValueError(f"layer '{layer}' makes no output of an input of shape {self.shape}")
        output_bytes = tensors.byte_size(output_shape, self.dtype)
        output_offset = -(-input_bytes // _ALIGNMENT) * _ALIGNMENT
        self._shm = shared_memory.SharedMemory(create=True, size=output_offset + output_bytes)
        self.key = "/" + self._shm.name
        self.name = name or self._shm.name
        self._output = pb.SharedMemoryRange(region=self.name, offset=output_offset,
                                            byte_size=output_bytes)
        self._lock = threading.Lock()
        try:
            client.register_shared_memory(self.name, self.key, self._shm.size, timeout=timeout)
        except BaseException:
            self._release()
            raise

    def forward(self, x, *, timeout=None):
        """Runs the layer on `x` and returns a copy of the output, as client.forward would.

        x: a numpy array or torch tensor of this object's dtype and shape (or fewer samples).
        The output is the same kind of object as x, in output_layout.
        """
        shape = tuple(int(d) for d in x.shape)
        if len(shape) != 4 or shape[1:] != self.shape[1:] or not 0 < shape[0] <= self.shape[0]:
            raise ValueError(f"input of shape {shape} does not fit {self.shape} (fewer samples "
                             f"may do)")
        if tensors.wire_dtype(x.dtype) != self.dtype:
            raise TypeError(f"input is {x.dtype}; this object takes "
                            f"{pb.DataType.Name(self.dtype)}")
        input_bytes = self._sample_bytes * shape[0]
        with self._lock:
            if self._shm is None:
                raise ValueError("SharedMemoryForward is closed")
            buffer = self._shm.buf
            _, decoder = tensors.write(x, buffer[:input_bytes], self.layout)
            tensor = pb.Tensor(dtype=self.dtype, layout=self.layout, shape=shape,
                               shared_memory=pb.SharedMemoryRange(region=self.name,
                                                                  byte_size=input_bytes))
            request = pb.ForwardRequest(layer=self.layer, input=tensor,
                                        output_layout=self.output_layout,
                                        output_shared_memory=self._output)
            reply = self.client.forward_message(
                request, timeout=self.timeout if timeout is None else timeout)
            start = self._output.offset
            return tensors.decode(reply.output, decoder,
                                  buffer[start:start + self._output.byte_size])

    def close(self):
        """Unregisters the region and removes the object; later calls do nothing."""
        with self._lock:
            if self._shm is None:
                return
            try:
                self.client.unregister_shared_memory(self.name, timeout=self.timeout)
            except NotFoundError:
                pass  # unregistered already (e.g. by someone's unregister_shared_memory(""))
            finally:
                self._release()

    def _release(self):
        shm, self._shm = self._shm, None
        try:
            shm.close()
        except BufferError:
            pass  # a view is still alive (e.g. in a traceback); the mapping goes with it
        shm.unlink()  # exactly once: also takes it off multiprocessing's resource tracker

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"convserve.SharedMemoryForward({self.layer!r}, {self.shape}, "
                f"key={getattr(self, 'key', None)!r})")
