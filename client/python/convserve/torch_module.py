"""PyTorch drop-ins: RemoteConv2d, an nn.Conv2d whose forward runs on a convserve server, and
swap_conv2d, which puts one in place of every nn.Conv2d of a model.

    model = torchvision.models.resnet50().eval()
    convserve.swap_conv2d(model, convserve.Client("gpu-box:50051"))
    y = model(x)   # every conv runs remotely, the rest locally

RemoteConv2d is a subclass of nn.Conv2d: same constructor, same parameters and state_dict
keys, so checkpoints load into it unchanged. Its weights live locally as usual and are
uploaded to the server on first use, and again whenever they change (load_state_dict, in-place
edits, .half(), ...) or when the server no longer has the layer (it restarted). It is for
inference: the output carries no gradient, and backward through it raises.
"""

import threading
import uuid

import torch
import torch.nn.functional as F
from torch import nn

from convserve.client import Client, same_padding
from convserve.errors import NotFoundError

# Guards uploads so concurrent first forwards of one module upload once. Uploads are rare,
# so one lock for all modules costs nothing and keeps modules copyable.
_UPLOAD_LOCK = threading.Lock()
_NAME_LIMIT = 128  # LayerSpec.name: [A-Za-z0-9_.-]{1,128}


def _new_layer_name(prefix="conv2d"):
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _fit_name(name):
    if len(name) <= _NAME_LIMIT:
        return name
    return f"{name[:_NAME_LIMIT - 17]}-{uuid.uuid5(uuid.NAMESPACE_OID, name).hex[:16]}"


def _check_supported(padding_mode, where):
    if padding_mode != "zeros":
        raise ValueError(f"{where}: padding_mode={padding_mode!r} is not supported by convserve "
                         f"(only 'zeros'); keep this layer local or pad the input yourself")


class _RemoteConv2dFunction(torch.autograd.Function):
    """Makes the remote call a graph node whose backward fails loudly instead of silently."""

    @staticmethod
    def forward(ctx, x, weight, bias, module):
        return module._forward_remote(x)

    @staticmethod
    def backward(ctx, grad_output):
        raise RuntimeError("RemoteConv2d is inference-only: convserve computes no gradients")


class RemoteConv2d(nn.Conv2d):
    """nn.Conv2d whose forward runs on a convserve server.

    Takes nn.Conv2d's arguments plus, keyword-only:
      client: a convserve.Client (shared, thread-safe), or
      target: "host:port" to make one.
      name: the server-side layer name; default a unique "conv2d-<random>".
      precision: for fp32, 'default' / 'tf32' / 'exact'; None follows
        torch.backends.cudnn.allow_tf32, as a local conv on a GPU would.
      load_options: extra Client.load_layer keyword arguments (batching, warm-up sizes).
    padding='same' with an even kernel (asymmetric padding) is handled by padding the input's
    bottom and right locally; padding_mode other than 'zeros' raises ValueError.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 client=None, target=None, name=None, precision=None, load_options=None):
        _check_supported(padding_mode, "RemoteConv2d")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        if (client is None) == (target is None):
            raise ValueError("RemoteConv2d needs exactly one of client= or target=")
        self.client = client if client is not None else Client(target)
        self.layer_name = _fit_name(name) if name else _new_layer_name()
        # A deep copy (or unpickled module) must not share the original's server-side layer:
        # it would overwrite the original's weights. id(self) tells copies apart.
        self._instance_id = id(self)
        self.precision = precision
        self.load_options = dict(load_options or {})
        # Weight/bias identity and versions of what the server holds; None: nothing yet.
        self._loaded_key = None

    @classmethod
    def from_conv2d(cls, conv, client=None, *, target=None, name=None, precision=None,
                    load_options=None):
        """A RemoteConv2d with `conv`'s hyper-parameters that shares its weight and bias."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv2d needs an nn.Conv2d, got {type(conv).__name__}")
        _check_supported(conv.padding_mode, "from_conv2d")
        if nn.parameter.is_lazy(conv.weight):
            raise ValueError("from_conv2d: the LazyConv2d is not initialised yet; run one "
                             "forward pass locally first")
        remote = torch.nn.utils.skip_init(
            cls, conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
            client=client, target=target, name=name, precision=precision,
            load_options=load_options)
        remote.weight = conv.weight
        remote.bias = conv.bias
        remote.train(conv.training)
        return remote

    def extra_repr(self):
        return f"{super().extra_repr()}, layer={self.layer_name!r}, target={self.client.target!r}"

    def _weights_key(self):
        def key(p):
            return None if p is None else (id(p), p._version, p.data_ptr(), p.dtype, p.shape)
        return (id(self), key(self.weight), key(self.bias))

    def _server_padding(self):
        """(padding the server applies, extra (right, bottom) padding applied locally)."""
        if isinstance(self.padding, str):
            if self.padding == "valid":
                return (0, 0), (0, 0)
            (top, bottom), (left, right) = same_padding(self.kernel_size, self.dilation)
            return (top, left), (right - left, bottom - top)
        return tuple(self.padding), (0, 0)

    def upload(self):
        """Loads this module's current weights onto the server now (normally done lazily)."""
        with _UPLOAD_LOCK:
            self._upload_locked()

    def _upload_locked(self):
        if self._instance_id != id(self):
            self.layer_name = _fit_name(f"{self.layer_name}-{uuid.uuid4().hex[:8]}")
            self._instance_id = id(self)
        precision = self.precision
        if self.weight.dtype != torch.float32:
            precision = None  # fp16/bf16 layers always accumulate in fp32; the server refuses one
        elif precision is None:
            precision = "tf32" if torch.backends.cudnn.allow_tf32 else "exact"
        padding, _ = self._server_padding()
        self.client.load_layer(self.layer_name, self.weight, self.bias, stride=self.stride,
                               padding=padding, dilation=self.dilation, groups=self.groups,
                               precision=precision, **self.load_options)
        self._loaded_key = self._weights_key()

    def _ensure_uploaded(self):
        if self._loaded_key == self._weights_key():
            return
        with _UPLOAD_LOCK:
            if self._loaded_key != self._weights_key():
                self._upload_locked()

    def release(self):
        """Unloads this module's layer from the server (it is uploaded again on next use)."""
        with _UPLOAD_LOCK:
            if self._loaded_key is None:
                return
            self._loaded_key = None
            try:
                self.client.unload_layer(self.layer_name)
            except NotFoundError:
                pass

    def _forward_remote(self, x):
        self._ensure_uploaded()
        _, (extra_w, extra_h) = self._server_padding()
        if extra_w or extra_h:
            x = F.pad(x, (0, extra_w, 0, extra_h))
        try:
            return self.client.forward(self.layer_name, x)
        except NotFoundError:
            # The server lost the layer (restart, or unloaded elsewhere): upload once more.
            with _UPLOAD_LOCK:
                self._upload_locked()
            return self.client.forward(self.layer_name, x)

    def forward(self, x):
        if x.dtype != self.weight.dtype:
            raise TypeError(f"RemoteConv2d: input dtype {x.dtype} differs from the layer's "
                            f"{self.weight.dtype}; convert one of them")
        if x.dim() != 4:
            raise ValueError(f"RemoteConv2d expects a 4-D [N, C, H, W] input, got shape "
                             f"{tuple(x.shape)}")
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if needs_graph:
            return _RemoteConv2dFunction.apply(x, self.weight, self.bias, self)
        return self._forward_remote(x)


def swap_conv2d(model, client=None, *, target=None, prefix=None, precision=None,
                load_options=None):
    """Replaces every nn.Conv2d in `model` with a RemoteConv2d sharing its weights.

    Layers are named "<prefix>.<module path>" on the server (prefix default: a random
    "m<hex>"), so one model's layers are easy to find in ListLayers. Modules used at several
    places stay shared. Raises ValueError before changing anything if a conv cannot be served
    (padding_mode other than 'zeros', uninitialised LazyConv2d). Returns the model (the new
    RemoteConv2d when `model` itself is an nn.Conv2d); the swap happens in place.
    """
    if client is None:
        if target is None:
            raise ValueError("swap_conv2d needs client= or target=")
        client = Client(target)
    prefix = prefix or f"m{uuid.uuid4().hex[:12]}"
    options = dict(precision=precision, load_options=load_options)

    def convertible(module):
        return isinstance(module, nn.Conv2d) and not isinstance(module, RemoteConv2d)

    if convertible(model):
        return RemoteConv2d.from_conv2d(model, client, name=prefix, **options)

    sites = []  # (parent, attribute, conv, path)
    for parent_path, parent in model.named_modules(remove_duplicate=False):
        for attribute, child in parent.named_children():
            if convertible(child):
                path = f"{parent_path}.{attribute}" if parent_path else attribute
                sites.append((parent, attribute, child, path))
    for _, _, conv, path in sites:
        _check_supported(conv.padding_mode, f"swap_conv2d: {path}")
        if nn.parameter.is_lazy(conv.weight):
            raise ValueError(f"swap_conv2d: {path} is an uninitialised LazyConv2d; run one "
                             f"forward pass locally first")
    replacements = {}
    for parent, attribute, conv, path in sites:
        if id(conv) not in replacements:
            replacements[id(conv)] = RemoteConv2d.from_conv2d(
                conv, client, name=f"{prefix}.{path}", **options)
        setattr(parent, attribute, replacements[id(conv)])
    return model


def release_remote_layers(model):
    """Unloads the server-side layers of every RemoteConv2d in `model`."""
    for module in model.modules():
        if isinstance(module, RemoteConv2d):
            module.release()
