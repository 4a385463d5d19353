#!/usr/bin/python3
"""An independent KServe v2 client test of convserve-server, in Python.

It shares no code with convserve: the gRPC stubs are generated from the proto files at test
time (protoc --python_out plus grpc_python_plugin, into a temporary directory), the server
is the real convserve-server on the CPU backend on free loopback ports, and results are
checked against a direct convolution written here in numpy. Every KServe RPC is called.

Environment (set by ctest): CONVSERVE_SERVER (the binary), CONVSERVE_PROTO_DIR (proto/),
optionally PROTOC and GRPC_PYTHON_PLUGIN.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np

MAX_INPUT_BYTES = 256 * 1024  # the server's --max_input_bytes in this test

pb = None        # kserve/grpc_predict_v2_pb2, once generated
pb_grpc = None
conv_pb = None   # convserve/v1/conv2d_pb2
conv_grpc = None


def generate_stubs(proto_dir, out_dir):
    protoc = os.environ.get("PROTOC") or shutil.which("protoc") or "/usr/bin/protoc"
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN") or "/usr/bin/grpc_python_plugin"
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([protoc, f"-I{proto_dir}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}", f"--plugin=protoc-gen-grpc_python={plugin}",
                    "kserve/grpc_predict_v2.proto", "convserve/v1/conv2d.proto"], check=True)
    sys.path.insert(0, out_dir)
    global pb, pb_grpc, conv_pb, conv_grpc
    from kserve import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    from convserve.v1 import conv2d_pb2, conv2d_pb2_grpc
    pb, pb_grpc, conv_pb, conv_grpc = (grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc,
                                       conv2d_pb2, conv2d_pb2_grpc)


# ---- numpy: storage types and the reference convolution ----

DTYPES = {"FP32": np.float32, "FP16": np.float16, "BF16": None}
TOLERANCE = {"FP32": 1e-5, "FP16": 2e-3, "BF16": 1e-2}


def to_bf16_bits(values):
    """float32 -> bfloat16 bits, rounded to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def encode(values, datatype):
    """float64 array -> little-endian bytes of `datatype`, and the values as stored."""
    if datatype == "BF16":
        bits = to_bf16_bits(values.astype(np.float32))
        return bits.astype("<u2").tobytes(), from_bf16_bits(bits).astype(np.float64)
    stored = values.astype(DTYPES[datatype])
    return stored.astype(stored.dtype.newbyteorder("<")).tobytes(), stored.astype(np.float64)


def decode(data, datatype, shape):
    if datatype == "BF16":
        return from_bf16_bits(np.frombuffer(data, dtype="<u2")).astype(np.float64).reshape(shape)
    return np.frombuffer(data, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")).astype(
        np.float64).reshape(shape)


def reference_conv(x, w, b, stride, pad, dilation, groups, activation):
    """Direct conv2d in float64: x [N, C, H, W], w [K, C/groups, R, S] -> [N, K, P, Q]."""
    n, c, h, wd = x.shape
    k, cg, r_size, s_size = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    p = (h + 2 * ph - dh * (r_size - 1) - 1) // sh + 1
    q = (wd + 2 * pw - dw * (s_size - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((n, k, p, q))
    kg = k // groups
    for g in range(groups):
        for r in range(r_size):
            for s in range(s_size):
                patch = xp[:, g * cg:(g + 1) * cg,
                           r * dh:r * dh + sh * (p - 1) + 1:sh,
                           s * dw:s * dw + sw * (q - 1) + 1:sw]
                out[:, g * kg:(g + 1) * kg] += np.einsum("ncpq,kc->nkpq", patch,
                                                         w[g * kg:(g + 1) * kg, :, r, s])
    if b is not None:
        out += b.reshape(1, k, 1, 1)
    if activation == "relu":
        out = np.maximum(out, 0.0)
    elif activation == "silu":
        out = out / (1.0 + np.exp(-out))
    return out


def relative_l2(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


# ---- the server ----

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        self.log_path = os.path.join(workdir, "server.log")
        self.process, self.target = None, None

    def start(self):
        for _ in range(3):  # a free port may be taken before the server binds it
            port = free_port()
            args = [self.binary, f"--listen=127.0.0.1:{port}",
                    f"--metrics_listen=127.0.0.1:{free_port()}", "--device=cpu",
                    f"--state_dir={self.workdir}/state", f"--max_input_bytes={MAX_INPUT_BYTES}"]
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            self.target = f"127.0.0.1:{port}"
            if self.wait_live():
                return
            self.stop()
        raise RuntimeError("convserve-server did not start:\n" + self.log())

    def wait_live(self):
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 60.0  # a loaded 2-core machine is slow to start
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if stub.ServerLive(pb.ServerLiveRequest(), timeout=1.0).live:
                        return True
                except grpc.RpcError:
                    time.sleep(0.1)
        return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()[-6000:]
        except OSError:
            return "(no log)"


# name -> (spec kwargs, datatype)
LAYERS = {
    "py_fp32": dict(c=3, k=8, kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilation=(1, 1),
                    groups=1, bias=True, activation="relu", datatype="FP32"),
    "py_fp16": dict(c=4, k=6, kernel=(3, 3), stride=(2, 1), pad=(0, 1), dilation=(2, 1),
                    groups=2, bias=True, activation="none", datatype="FP16"),
    "py_bf16": dict(c=5, k=4, kernel=(1, 3), stride=(1, 2), pad=(0, 1), dilation=(1, 1),
                    groups=1, bias=False, activation="silu", datatype="BF16"),
}
PROTO_DTYPE = {"FP32": 1, "FP16": 2, "BF16": 3}            # convserve.v1.DataType
PROTO_ACTIVATION = {"none": 0, "relu": 1, "silu": 2}       # convserve.v1.Activation


class KserveClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ.get("CONVSERVE_SERVER")
        proto_dir = os.environ.get("CONVSERVE_PROTO_DIR")
        if not binary or not proto_dir:
            raise unittest.SkipTest("set CONVSERVE_SERVER and CONVSERVE_PROTO_DIR")
        cls.tmp = tempfile.TemporaryDirectory(prefix="convserve-kserve-py-")
        generate_stubs(proto_dir, os.path.join(cls.tmp.name, "stubs"))
        cls.rng = np.random.default_rng()
        cls.server = Server(binary, cls.tmp.name)
        cls.server.start()
        options = [("grpc.max_receive_message_length", 64 << 20)]
        cls.channel = grpc.insecure_channel(cls.server.target, options=options)
        cls.stub = pb_grpc.GRPCInferenceServiceStub(cls.channel)
        cls.weights = {}
        native = conv_grpc.Conv2dStub(cls.channel)
        for name, layer in LAYERS.items():
            w = cls.rng.uniform(-1, 1, (layer["k"], layer["c"] // layer["groups"]) +
                                layer["kernel"])
            b = cls.rng.uniform(-1, 1, layer["k"]) if layer["bias"] else None
            w_bytes, w_stored = encode(w, layer["datatype"])
            b_bytes, b_stored = encode(b, layer["datatype"]) if b is not None else (b"", None)
            spec = conv_pb.LayerSpec(
                name=name, in_channels=layer["c"], out_channels=layer["k"],
                kernel=conv_pb.Size2d(h=layer["kernel"][0], w=layer["kernel"][1]),
                stride=conv_pb.Size2d(h=layer["stride"][0], w=layer["stride"][1]),
                padding=conv_pb.Size2d(h=layer["pad"][0], w=layer["pad"][1]),
                dilation=conv_pb.Size2d(h=layer["dilation"][0], w=layer["dilation"][1]),
                groups=layer["groups"], dtype=PROTO_DTYPE[layer["datatype"]],
                precision=2 if layer["datatype"] == "FP32" else 0,  # exact FP32
                has_bias=layer["bias"], activation=PROTO_ACTIVATION[layer["activation"]])
            native.LoadLayer(conv_pb.LoadLayerRequest(spec=spec, weights=w_bytes, bias=b_bytes),
                             timeout=120)
            cls.weights[name] = (w_stored, b_stored)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()
        cls.tmp.cleanup()

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        result = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            print("\n--- convserve-server log (tail) ---\n" + self.server.log())
        return result

    # -- helpers --

    def make_request(self, name, n, h, w, nhwc=False, request_id=""):
        """A raw-tensor request and the float64 NCHW input it carries."""
        layer = LAYERS[name]
        x = self.rng.uniform(-1, 1, (n, layer["c"], h, w))
        wire = x.transpose(0, 2, 3, 1) if nhwc else x
        data, stored = encode(np.ascontiguousarray(wire), layer["datatype"])
        x_stored = stored.transpose(0, 3, 1, 2) if nhwc else stored
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="input", datatype=layer["datatype"], shape=list(wire.shape))
        request = pb.ModelInferRequest(model_name=name, id=request_id, inputs=[tensor],
                                       raw_input_contents=[data])
        if nhwc:
            request.parameters["layout"].string_param = "NHWC"
        return request, x_stored

    def check(self, name, x, response, nhwc=False):
        layer = LAYERS[name]
        w, b = self.weights[name]
        want = reference_conv(x, w, b, layer["stride"], layer["pad"], layer["dilation"],
                              layer["groups"], layer["activation"])
        self.assertEqual(response.model_name, name)
        self.assertEqual(len(response.outputs), 1)
        output = response.outputs[0]
        self.assertEqual(output.name, "output")
        self.assertEqual(output.datatype, layer["datatype"])
        expected_shape = (want.shape[0], want.shape[2], want.shape[3], want.shape[1]) if nhwc \
            else want.shape
        self.assertEqual(tuple(output.shape), tuple(expected_shape))
        got = decode(response.raw_output_contents[0], layer["datatype"], expected_shape)
        if nhwc:
            got = got.transpose(0, 3, 1, 2)
        self.assertLess(relative_l2(got, want), TOLERANCE[layer["datatype"]], name)

    def assert_error(self, request, code, text):
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ModelInfer(request, timeout=120)
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        self.assertIn(text, caught.exception.details())

    # -- the RPCs --

    def test_server_live_ready_and_metadata(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest(), timeout=30).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready)
        metadata = self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30)
        self.assertEqual(metadata.name, "convserve")
        self.assertTrue(metadata.version)

    def test_model_ready_and_metadata(self):
        for name, layer in LAYERS.items():
            self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=30).ready)
            metadata = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=30)
            self.assertEqual(metadata.name, name)
            self.assertEqual(list(metadata.versions), ["1"])
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                             [("input", layer["datatype"], [-1, layer["c"], -1, -1])])
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.outputs],
                             [("output", layer["datatype"], [-1, layer["k"], -1, -1])])
        self.assertFalse(self.stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=30).ready)
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=30)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("nope", caught.exception.details())

    def test_infer_raw_every_datatype(self):
        for name in LAYERS:
            request, x = self.make_request(name, 2, 11, 9, request_id=f"id-{name}")
            response = self.stub.ModelInfer(request, timeout=120)
            self.assertEqual(response.id, f"id-{name}")
            self.check(name, x, response)

    def test_infer_fp32_contents(self):
        request, x = self.make_request("py_fp32", 1, 7, 6)
        del request.raw_input_contents[:]
        request.inputs[0].contents.fp32_contents.extend(x.astype(np.float32).ravel().tolist())
        self.check("py_fp32", x, self.stub.ModelInfer(request, timeout=120))

    def test_infer_nhwc(self):
        for name in LAYERS:
            request, x = self.make_request(name, 2, 8, 10, nhwc=True)
            self.check(name, x, self.stub.ModelInfer(request, timeout=120), nhwc=True)

    def test_errors(self):
        request, _ = self.make_request("py_fp32", 1, 5, 5)
        bad = pb.ModelInferRequest()
        bad.CopyFrom(request)
        bad.model_name = "nope"
        self.assert_error(bad, grpc.StatusCode.NOT_FOUND, "nope")
        bad.CopyFrom(request)
        bad.inputs[0].datatype = "FP64"
        self.assert_error(bad, grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].datatype")
        bad.CopyFrom(request)
        bad.raw_input_contents[0] = request.raw_input_contents[0][:-4]
        self.assert_error(bad, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents[0]")
        bad.CopyFrom(request)
        bad.parameters["layout"].string_param = "NCWH"
        self.assert_error(bad, grpc.StatusCode.INVALID_ARGUMENT, "parameters.layout")
        big, _ = self.make_request("py_fp32", 1, 160, 160)  # 300 KiB > --max_input_bytes
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ModelInfer(big, timeout=120)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_stream_many_in_flight(self):
        count = 150
        cases = {}
        requests = []
        for i in range(count):
            name = list(LAYERS)[i % len(LAYERS)]
            nhwc = i % 3 == 0
            request, x = self.make_request(name, 1 + i % 2, 5 + i % 4, 6, nhwc=nhwc,
                                           request_id=f"r{i}")
            if i % 11 == 5:
                request.model_name = "nope"  # fails alone; the stream goes on
            cases[request.id] = (request.model_name, x, nhwc)
            requests.append(request)
        # The request iterator is drained by gRPC's own thread while we read responses.
        answered = {}
        for response in self.stub.ModelStreamInfer(iter(requests), timeout=300):
            request_id = response.infer_response.id
            self.assertIn(request_id, cases)
            self.assertNotIn(request_id, answered)
            answered[request_id] = response
            name, x, nhwc = cases[request_id]
            if name == "nope":
                self.assertIn("NOT_FOUND", response.error_message)
                self.assertIn("nope", response.error_message)
            else:
                self.assertEqual(response.error_message, "")
                self.check(name, x, response.infer_response, nhwc=nhwc)
        self.assertEqual(len(answered), count)


if __name__ == "__main__":
    unittest.main(verbosity=2)
