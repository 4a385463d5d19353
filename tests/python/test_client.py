"""convserve.Client against the real server (CPU backend): every coverage shape in fp32, fp16
and bf16, NCHW and channels-last, numpy and torch, with and without bias; layer management;
errors with the server's message; concurrent and async forwards."""

import concurrent.futures
import threading
import unittest

import grpc
import numpy as np
import torch

import convserve
import shapes
from server_process import ServerTestCase

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def layer_name(shape, dtype, bias):
    return f"{shape.name}.{str(dtype).split('.')[-1]}.{'bias' if bias else 'nobias'}"


def exact_if_fp32(dtype):
    """fp32 layers are tested at exact-FP32 precision; fp16/bf16 layers take no precision."""
    return "exact" if dtype in (torch.float32, "fp32") else None


class CoverageTest(ServerTestCase):
    """Each coverage shape, both bias settings, three dtypes; torch NCHW and channels_last."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.generator = torch.Generator().manual_seed(shapes.seed())

    def check_torch(self, shape, dtype, bias):
        x, weight, b = shapes.random_problem(shape, dtype, self.generator, bias)
        name = layer_name(shape, dtype, bias)
        info = self.client.load_layer(name, weight, b, precision=exact_if_fp32(dtype),
                                      **shapes.conv_kwargs(shape))
        self.assertEqual(info.spec.name, name)
        self.assertEqual(info.spec.has_bias, bias)
        expected = shapes.reference(x, weight, b, **shapes.conv_kwargs(shape))
        for memory_format in (torch.contiguous_format, torch.channels_last):
            with self.subTest(memory_format=str(memory_format)):
                # .to() gives canonical strides even where C == 1 makes them ambiguous, and
                # the output follows the input's memory format as torch's own conv2d does.
                out = self.client.forward(name, x.to(memory_format=memory_format))
                self.assertIsInstance(out, torch.Tensor)
                self.assertEqual(out.dtype, dtype)
                self.assertEqual(tuple(out.shape), tuple(expected.shape))
                self.assertTrue(out.is_contiguous(memory_format=memory_format))
                error = shapes.rel_l2(out, expected)
                self.assertLess(error, shapes.TOLERANCE[dtype])
        self.client.unload_layer(name)

    def test_every_shape_dtype_layout_and_bias(self):
        for shape in shapes.read_shapes():
            for dtype in DTYPES:
                for bias in (bool(shape.bias), not shape.bias):
                    with self.subTest(shape=shape.name, dtype=str(dtype), bias=bias):
                        self.check_torch(shape, dtype, bias)

    def test_numpy_in_numpy_out(self):
        """fp32 and fp16 arrays, bf16 as raw uint16 bits; NCHW and NHWC-strided arrays."""
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=self.generator)))
        for shape in shapes.read_shapes():
            x = rng.standard_normal((shape.n, shape.c, shape.h, shape.w), dtype=np.float32)
            w = rng.standard_normal((shape.k, shape.c // shape.groups, shape.r, shape.s),
                                    dtype=np.float32)
            b = rng.standard_normal(shape.k, dtype=np.float32) if shape.bias else None
            cases = {
                "fp32": (x, w, b, lambda a: a),
                "fp16": (x.astype(np.float16), w.astype(np.float16),
                         None if b is None else b.astype(np.float16), lambda a: a),
                "bf16": (convserve.to_bfloat16_bits(x), convserve.to_bfloat16_bits(w),
                         None if b is None else convserve.to_bfloat16_bits(b),
                         convserve.from_bfloat16_bits),
            }
            for dtype_name, (xs, ws, bs, to_float) in cases.items():
                name = f"np.{shape.name}.{dtype_name}"
                self.client.load_layer(name, ws, bs, precision=exact_if_fp32(dtype_name),
                                       **shapes.conv_kwargs(shape))
                expected = shapes.reference(
                    torch.from_numpy(to_float(xs)), torch.from_numpy(to_float(ws)),
                    None if bs is None else torch.from_numpy(to_float(bs)),
                    **shapes.conv_kwargs(shape))
                nhwc = np.empty((shape.n, shape.h, shape.w, shape.c), xs.dtype)
                nhwc[...] = xs.transpose(0, 2, 3, 1)  # fresh NHWC memory, even when C == 1
                nhwc_view = nhwc.transpose(0, 3, 1, 2)
                for layout, array in (("nchw", xs), ("nhwc", nhwc_view)):
                    with self.subTest(shape=shape.name, dtype=dtype_name, layout=layout):
                        out = self.client.forward(name, array)
                        self.assertIsInstance(out, np.ndarray)
                        self.assertEqual(out.dtype, xs.dtype)
                        self.assertEqual(out.shape, tuple(expected.shape))
                        stored = out.transpose(0, 2, 3, 1) if layout == "nhwc" else out
                        self.assertTrue(stored.flags.c_contiguous)
                        error = shapes.rel_l2(np.ascontiguousarray(to_float(out)), expected)
                        tolerance = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1e-2}[dtype_name]
                        self.assertLess(error, tolerance)
                self.client.unload_layer(name)

    def test_output_layout_override(self):
        shape = shapes.read_shapes()[0]
        x, weight, b = shapes.random_problem(shape, torch.float32, self.generator)
        self.client.load_layer("override", weight, b, **shapes.conv_kwargs(shape))
        expected = shapes.reference(x, weight, b, **shapes.conv_kwargs(shape))
        out = self.client.forward("override", x, output_layout="nhwc")
        self.assertTrue(out.is_contiguous(memory_format=torch.channels_last))
        self.assertLess(shapes.rel_l2(out, expected), 1e-5)
        out = self.client.forward("override", x.to(memory_format=torch.channels_last),
                                  output_layout=torch.contiguous_format)
        self.assertTrue(out.is_contiguous())
        self.assertLess(shapes.rel_l2(out, expected), 1e-5)
        self.client.unload_layer("override")


class LayerManagementAndErrorsTest(ServerTestCase):

    def setUp(self):
        self.weight = torch.randn(8, 4, 3, 3)
        self.bias = torch.randn(8)

    def tearDown(self):
        for layer in self.client.list_layers():
            self.client.unload_layer(layer.spec.name)

    def test_load_list_unload(self):
        info = self.client.load_layer("a", self.weight, self.bias, stride=2, padding=1,
                                      dtype="fp16", activation="relu",
                                      max_batch_size=4, max_queue_delay_us=100)
        self.assertEqual(info.spec.in_channels, 4)
        self.assertEqual(info.spec.out_channels, 8)
        self.assertEqual((info.spec.kernel.h, info.spec.kernel.w), (3, 3))
        self.assertEqual((info.spec.stride.h, info.spec.stride.w), (2, 2))
        self.assertEqual(info.spec.dtype, convserve.pb.DATA_TYPE_FP16)
        self.assertEqual(info.spec.activation, convserve.pb.ACTIVATION_RELU)
        self.assertIn("cpu", info.device)
        self.client.load_layer("b", self.weight.numpy(), None, padding="same")
        self.assertEqual(sorted(l.spec.name for l in self.client.list_layers()), ["a", "b"])
        first_generation = info.generation
        again = self.client.load_layer("a", self.weight, self.bias, stride=2, padding=1,
                                       dtype="fp16", activation="relu")
        self.assertGreater(again.generation, first_generation)
        self.client.unload_layer("a")
        self.assertEqual([l.spec.name for l in self.client.list_layers()], ["b"])

    def test_fused_activation_and_dtype_conversion(self):
        # fp32 weights converted to a bf16 layer with a fused ReLU.
        x = torch.randn(2, 4, 9, 9).bfloat16()
        self.client.load_layer("relu", self.weight, self.bias, padding=1, dtype=torch.bfloat16,
                               activation="relu")
        expected = torch.relu(shapes.reference(x, self.weight.bfloat16(), self.bias.bfloat16(),
                                               padding=1))
        out = self.client.forward("relu", x)
        self.assertEqual(out.dtype, torch.bfloat16)
        self.assertLess(shapes.rel_l2(out, expected), 1e-2)

    def test_unknown_layer_is_not_found_with_server_message(self):
        with self.assertRaises(convserve.NotFoundError) as caught:
            self.client.forward("no-such-layer", torch.randn(1, 4, 8, 8))
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("no-such-layer", caught.exception.details)
        self.assertIsInstance(caught.exception, LookupError)
        with self.assertRaises(convserve.NotFoundError) as caught:
            self.client.unload_layer("no-such-layer")
        self.assertIn("no-such-layer", str(caught.exception))

    def test_wrong_channels_is_invalid_argument_with_server_message(self):
        self.client.load_layer("c4", self.weight, self.bias, padding=1)
        with self.assertRaises(convserve.InvalidArgumentError) as caught:
            self.client.forward("c4", torch.randn(1, 5, 8, 8))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("channel", caught.exception.details.lower())
        self.assertIsInstance(caught.exception, ValueError)

    def test_wrong_dtype_is_invalid_argument(self):
        self.client.load_layer("c4", self.weight, self.bias, padding=1)
        with self.assertRaises(convserve.InvalidArgumentError) as caught:
            self.client.forward("c4", torch.randn(1, 4, 8, 8).half())
        self.assertTrue(caught.exception.details)

    def test_bad_spec_is_invalid_argument(self):
        # groups=3: in_channels 4 * 3 = 12 divides, out_channels 8 does not.
        with self.assertRaises(convserve.InvalidArgumentError) as caught:
            self.client.load_layer("bad", torch.randn(8, 4, 3, 3), groups=3)
        self.assertTrue(caught.exception.details)
        with self.assertRaises(convserve.InvalidArgumentError):
            self.client.load_layer("bad name!", self.weight)

    def test_tune_on_cpu_backend_is_failed_precondition(self):
        self.client.load_layer("c4", self.weight, self.bias, padding=1)
        with self.assertRaises(convserve.FailedPreconditionError):
            self.client.tune("c4", [1, 8], input_size=(8, 8))

    def test_client_side_argument_errors(self):
        with self.assertRaises(TypeError):
            self.client.forward("c4", torch.randn(1, 4, 8, 8).double())
        with self.assertRaises(ValueError):
            self.client.forward("c4", torch.randn(4, 8, 8))
        with self.assertRaisesRegex(ValueError, "padding='same'"):
            self.client.load_layer("even", torch.randn(8, 4, 2, 2), padding="same")

    def test_unreachable_server_is_unavailable(self):
        with convserve.Client("127.0.0.1:1", timeout=10) as nowhere:
            with self.assertRaises(convserve.UnavailableError):
                nowhere.list_layers()


class ConcurrencyTest(ServerTestCase):
    """Many callers at once each get their own answer (the server batches them together)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.weight = torch.randn(16, 8, 3, 3)
        cls.bias = torch.randn(16)
        cls.client.load_layer("shared", cls.weight, cls.bias, padding=1, precision="exact",
                              max_queue_delay_us=2000)

    def expected(self, x):
        return shapes.reference(x, self.weight, self.bias, padding=1)

    def test_threads_sharing_one_client(self):
        inputs = [torch.randn(1 + i % 3, 8, 10, 12) for i in range(48)]
        results = [None] * len(inputs)
        barrier = threading.Barrier(8)

        def worker(first):
            barrier.wait()
            for i in range(first, len(inputs), 8):
                results[i] = self.client.forward("shared", inputs[i])

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for x, out in zip(inputs, results):
            self.assertIsNotNone(out)
            self.assertLess(shapes.rel_l2(out, self.expected(x)), 1e-5)

    def test_forward_async_futures(self):
        inputs = [torch.randn(2, 8, 7, 7) for _ in range(32)]
        futures = [self.client.forward_async("shared", x, detailed=(i % 2 == 0))
                   for i, x in enumerate(inputs)]
        for i, (x, future) in enumerate(zip(inputs, futures)):
            result = future.result(timeout=120)
            out = result.output if i % 2 == 0 else result
            if i % 2 == 0:
                self.assertGreaterEqual(result.batch_size, 2)
                self.assertIn("cpu", result.device)
            self.assertLess(shapes.rel_l2(out, self.expected(x)), 1e-5)

    def test_async_errors_arrive_through_the_future(self):
        future = self.client.forward_async("missing", torch.randn(1, 8, 4, 4))
        with self.assertRaises(convserve.NotFoundError):
            future.result(timeout=60)
        self.assertIsInstance(future.exception(), convserve.ConvserveError)

    def test_thread_pool_with_numpy(self):
        arrays = [np.random.standard_normal((1, 8, 6, 6)).astype(np.float32) for _ in range(24)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            outs = list(pool.map(lambda a: self.client.forward("shared", a), arrays))
        for a, out in zip(arrays, outs):
            self.assertLess(shapes.rel_l2(out, self.expected(torch.from_numpy(a))), 1e-5)


if __name__ == "__main__":
    unittest.main()
