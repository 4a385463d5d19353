"""convserve.Client: loads conv2d layers onto a convserve server and runs forward passes.

    client = convserve.Client("localhost:50051")
    client.load_layer("stem", weight, bias, stride=2, padding=3)   # numpy or torch OIHW
    y = client.forward("stem", x)                                   # same kind of object back

A Client wraps one gRPC channel and is safe to share between threads; concurrent forwards of
one layer are batched together by the server. forward_async returns a
concurrent.futures.Future. Failures raise ConvserveError subclasses carrying the gRPC code and
the server's message.
"""

import collections
import concurrent.futures

import grpc

from convserve import tensors
from convserve.errors import error_from_rpc
from convserve.v1 import conv2d_pb2 as pb
from convserve.v1 import conv2d_pb2_grpc as pb_grpc

# What forward_detailed returns: the output plus where the server says the time went.
ForwardResult = collections.namedtuple(
    "ForwardResult",
    ["output", "batch_size", "kernel_config", "device", "queue_us", "compute_us", "total_us"])

_PRECISIONS = {"default": pb.PRECISION_DEFAULT, "tf32": pb.PRECISION_TF32,
               "exact": pb.PRECISION_EXACT_FP32, "exact_fp32": pb.PRECISION_EXACT_FP32,
               "fp32": pb.PRECISION_EXACT_FP32}
_ACTIVATIONS = {"none": pb.ACTIVATION_NONE, "relu": pb.ACTIVATION_RELU,
                "silu": pb.ACTIVATION_SILU, "gelu_tanh": pb.ACTIVATION_GELU_TANH,
                "sigmoid": pb.ACTIVATION_SIGMOID, "tanh": pb.ACTIVATION_TANH}

# Tensors are sent whole: lift gRPC's default 4 MiB receive limit on this side (the server
# applies its own limit and says so in its error).
_DEFAULT_OPTIONS = (("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1))


def _pair(value, what):
    if isinstance(value, int):
        return (value, value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair


def _named(value, table, what):
    if value is None:
        return 0
    if isinstance(value, str):
        if value.lower() not in table:
            raise ValueError(f"unknown {what} {value!r}; one of {sorted(table)}")
        return table[value.lower()]
    return int(value)


def same_padding(kernel, dilation):
    """Per dimension (before, after) zero padding that PyTorch's padding='same' applies."""
    pads = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads


def _resolve_padding(padding, kernel, stride, dilation):
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0)
        if mode != "same":
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', not {padding!r}")
        if stride != (1, 1):
            raise ValueError("padding='same' is only defined for stride 1 (as in PyTorch)")
        pads = same_padding(kernel, dilation)
        if any(before != after for before, after in pads):
            raise ValueError(
                f"padding='same' for kernel {kernel} with dilation {dilation} pads one more row "
                f"or column after than before, which the service does not do; pad the input "
                f"yourself (RemoteConv2d does this for you)")
        return (pads[0][0], pads[1][0])
    return _pair(padding, "padding")


def _shape(x):
    return tuple(int(d) for d in x.shape)


class _ForwardFuture(concurrent.futures.Future):
    """A Future for one Forward call; cancel() cancels the RPC as well."""

    def __init__(self, call):
        super().__init__()
        self._call = call

    def cancel(self):
        if not super().cancel():
            return False
        self._call.cancel()
        return True


class Client:
    """A connection to one convserve server. Thread-safe; use as a context manager or close().

    Args:
      target: "host:port" of the server's native gRPC API.
      timeout: default deadline in seconds for every call (None: no deadline); each method
        also takes its own `timeout`.
      credentials: grpc.ChannelCredentials for TLS; None for an insecure channel.
      options: extra gRPC channel options, e.g. [("grpc.keepalive_time_ms", 10000)].
      channel: an existing grpc.Channel to use instead of making one (target is then ignored).
    """

    def __init__(self, target, *, timeout=None, credentials=None, options=(), channel=None):
        self.target = target
        self.timeout = timeout
        self._options = tuple(options)
        self._credentials = credentials
        if channel is None:
            all_options = list(_DEFAULT_OPTIONS) + list(options)
            if credentials is None:
                channel = grpc.insecure_channel(target, options=all_options)
            else:
                channel = grpc.secure_channel(target, credentials, options=all_options)
            self._owns_channel = True
        else:
            self._owns_channel = False
        self._channel = channel
        self._stub = pb_grpc.Conv2dStub(channel)

    def close(self):
        """Closes the channel (if this Client made it); calls in flight are cancelled."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __deepcopy__(self, memo):
        return self  # copying a model that holds a Client shares the connection

    def __reduce__(self):
        # Pickling (e.g. a model with RemoteConv2d sent to a worker) reconnects on load.
        if not self._owns_channel or self._credentials is not None:
            raise TypeError("only a Client made from a target without credentials pickles")
        return (_reconnect, (self.target, self.timeout, self._options))

    def __repr__(self):
        return f"convserve.Client({self.target!r})"

    def wait_for_ready(self, timeout=None):
        """Blocks until the channel is connected; raises TimeoutError after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"convserve server at {self.target} not reachable "
                               f"within {timeout} s") from None

    def _call(self, method, request, timeout):
        try:
            return method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None

    def _deadline(self, timeout):
        return self.timeout if timeout is None else timeout

    # Layers.

    def load_layer(self, name, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
                   dtype=None, precision=None, activation=None, max_batch_size=0,
                   max_queue_delay_us=0, preferred_batch_sizes=(), input_size=None,
                   warmup_batch_sizes=(), timeout=None):
        """Loads (or atomically replaces) layer `name` with the given weights.

        Args:
          weight: [out_channels, in_channels / groups, kH, kW] numpy array or torch tensor.
          bias: [out_channels] or None.
          stride, dilation: int or (h, w). padding: int, (h, w), 'valid', or 'same' (stride 1,
            symmetric cases only).
          dtype: the layer's element type ('fp32', 'fp16', 'bf16', a torch or numpy dtype);
            default: the weights' own. Weights are converted to it.
          precision: for fp32 layers only, 'default' (TF32, as PyTorch on cuDNN), 'tf32' or
            'exact'; the server refuses it on fp16/bf16 layers (which accumulate in fp32).
          activation: applied after bias in the kernel: 'relu', 'silu', 'gelu_tanh',
            'sigmoid', 'tanh' or None.
          max_batch_size, max_queue_delay_us, preferred_batch_sizes: dynamic batching knobs;
            0 / empty keeps the server's defaults.
          input_size, warmup_batch_sizes: (H, W) and batch sizes to auto-tune for before the
            layer reports ready.
        Returns: the server's LayerInfo (pb message).
        """
        w_shape = _shape(weight)
        if len(w_shape) != 4:
            raise ValueError(f"weight must be 4-D [out, in/groups, kH, kW], got {w_shape}")
        out_channels, in_per_group, kh, kw = w_shape
        stride_hw = _pair(stride, "stride")
        dilation_hw = _pair(dilation, "dilation")
        padding_hw = _resolve_padding(padding, (kh, kw), stride_hw, dilation_hw)
        wire_dtype, weight_bytes, bias_bytes = tensors.encode_weights(weight, bias, dtype)
        spec = pb.LayerSpec(
            name=name, in_channels=in_per_group * groups, out_channels=out_channels,
            kernel=pb.Size2d(h=kh, w=kw), stride=pb.Size2d(h=stride_hw[0], w=stride_hw[1]),
            padding=pb.Size2d(h=padding_hw[0], w=padding_hw[1]),
            dilation=pb.Size2d(h=dilation_hw[0], w=dilation_hw[1]), groups=groups,
            dtype=wire_dtype, precision=_named(precision, _PRECISIONS, "precision"),
            has_bias=bias is not None, activation=_named(activation, _ACTIVATIONS, "activation"),
            batching=pb.BatchingOptions(max_batch_size=max_batch_size,
                                        max_queue_delay_us=max_queue_delay_us,
                                        preferred_batch_sizes=list(preferred_batch_sizes)),
            warmup_batch_sizes=list(warmup_batch_sizes))
        if input_size is not None:
            h, w = _pair(input_size, "input_size")
            spec.input_size.CopyFrom(pb.Size2d(h=h, w=w))
        request = pb.LoadLayerRequest(spec=spec, weights=weight_bytes, bias=bias_bytes)
        return self._call(self._stub.LoadLayer, request, timeout).layer

    def unload_layer(self, name, *, timeout=None):
        """Unloads layer `name`; NotFoundError when it is not loaded."""
        self._call(self._stub.UnloadLayer, pb.UnloadLayerRequest(name=name), timeout)

    def list_layers(self, *, timeout=None):
        """The loaded layers, as a list of LayerInfo pb messages."""
        return list(self._call(self._stub.ListLayers, pb.ListLayersRequest(), timeout).layers)

    def tune(self, name, batch_sizes, *, input_size=None, layout=None, timeout=None):
        """Auto-tunes layer `name` for `batch_sizes`; returns the TunedChoice list.

        FailedPreconditionError on a server running the CPU reference backend.
        """
        request = pb.TuneRequest(layer=name, batch_sizes=list(batch_sizes),
                                 layout=tensors.wire_layout(layout))
        if input_size is not None:
            h, w = _pair(input_size, "input_size")
            request.input_size.CopyFrom(pb.Size2d(h=h, w=w))
        return list(self._call(self._stub.Tune, request, timeout).tuned)

    # Shared memory (servers started with --allow_shared_memory; FailedPreconditionError on
    # others). convserve.SharedMemoryForward does all of it for one layer.

    def register_shared_memory(self, name, key, byte_size, *, offset=0, timeout=None):
        """Registers bytes [offset, offset + byte_size) of the POSIX shared-memory object `key`
        ("/" and [A-Za-z0-9_.-], as shm_open takes) under `name`, for ForwardRequests to name
        in their SharedMemoryRange.region. AlreadyExistsError when `name` is registered."""
        request = pb.RegisterSharedMemoryRequest(name=name, key=key, offset=offset,
                                                 byte_size=byte_size)
        self._call(self._stub.RegisterSharedMemory, request, timeout)

    def unregister_shared_memory(self, name="", *, timeout=None):
        """Unregisters region `name` (NotFoundError when it is not registered); the empty name
        unregisters every region, this client's or not. Requests holding it are unaffected."""
        request = pb.UnregisterSharedMemoryRequest(name=name)
        self._call(self._stub.UnregisterSharedMemory, request, timeout)

    def shared_memory_status(self, name="", *, timeout=None):
        """The registered regions (all, or `name`'s; NotFoundError when it is not registered),
        as a list of pb.RegisterSharedMemoryRequest messages sorted by name."""
        request = pb.SharedMemoryStatusRequest(name=name)
        return list(self._call(self._stub.SharedMemoryStatus, request, timeout).regions)

    # Forward passes.

    def _forward_request(self, name, x, output_layout):
        tensor, decoder = tensors.encode(x)
        request = pb.ForwardRequest(layer=name, input=tensor,
                                    output_layout=tensors.wire_layout(output_layout))
        return request, decoder

    def forward(self, name, x, *, output_layout=None, timeout=None):
        """Runs layer `name` on `x` and returns the output as the same kind of object.

        Args:
          x: a 4-D [N, C, H, W] numpy array or torch tensor of float32, float16 or bfloat16
            (numpy: uint16 bfloat16 bits). NHWC memory (torch.channels_last) is sent as NHWC.
          output_layout: 'nchw' or 'nhwc' (or a torch memory format); default: x's layout.
        """
        return self.forward_detailed(name, x, output_layout=output_layout,
                                     timeout=timeout).output

    def forward_detailed(self, name, x, *, output_layout=None, timeout=None):
        """Like forward, but returns a ForwardResult with the server's timing and batch info."""
        request, decoder = self._forward_request(name, x, output_layout)
        return _result(self._call(self._stub.Forward, request, timeout), decoder)

    def forward_message(self, request, *, timeout=None):
        """Sends a pb.ForwardRequest as it is and returns the pb.ForwardResponse.

        For requests built by hand, e.g. with input.shared_memory or output_shared_memory
        naming registered ranges; forward and forward_detailed build their own.
        """
        return self._call(self._stub.Forward, request, timeout)

    def forward_async(self, name, x, *, output_layout=None, timeout=None, detailed=False):
        """Starts a forward pass and returns a concurrent.futures.Future of its output.

        The input is serialised before this returns, so `x` may be reused at once. The
        future's result() raises the ConvserveError the call ended with; cancel() cancels the
        RPC. With detailed=True the future holds a ForwardResult.
        """
        request, decoder = self._forward_request(name, x, output_layout)
        call = self._stub.Forward.future(request, timeout=self._deadline(timeout))
        future = _ForwardFuture(call)

        def on_done(finished):
            if not future.set_running_or_notify_cancel():
                return  # cancelled here first
            try:
                result = _result(finished.result(), decoder)
                future.set_result(result if detailed else result.output)
            except grpc.RpcError as error:
                future.set_exception(error_from_rpc(error))
            except grpc.FutureCancelledError:
                future.set_exception(error_from_rpc(_Cancelled()))
            except Exception as error:  # a malformed reply: hand it to the caller
                future.set_exception(error)

        call.add_done_callback(on_done)
        return future


def _reconnect(target, timeout, options):
    return Client(target, timeout=timeout, options=options)


class _Cancelled:
    """Stands in for the grpc.Call of an RPC cancelled on this side."""

    @staticmethod
    def code():
        return grpc.StatusCode.CANCELLED

    @staticmethod
    def details():
        return "cancelled by the client"


def _result(response, decoder):
    return ForwardResult(output=tensors.decode(response.output, decoder),
                         batch_size=response.batch_size,
                         kernel_config=response.kernel_config, device=response.device,
                         queue_us=response.timing.queue_us,
                         compute_us=response.timing.compute_us,
                         total_us=response.timing.total_us)
