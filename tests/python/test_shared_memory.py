"""Tensors in POSIX shared memory against the real server (CPU backend): SharedMemoryForward
returns bitwise what Client.forward does for every coverage shape in fp32, fp16 and bf16, NCHW
and channels-last, torch and numpy; register / status / unregister; hand-built requests through
forward_message; the errors; and no object left in /dev/shm."""

import os
import threading
import unittest
from multiprocessing import shared_memory

import grpc
import numpy as np
import torch

import convserve
import shapes
from server_process import ServerTestCase

pb = convserve.pb
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SHM_DIR = "/dev/shm"


def shm_objects():
    """multiprocessing.shared_memory's objects (other tests running at once make others)."""
    return {name for name in os.listdir(SHM_DIR) if name.startswith("psm_")}


def bits(out):
    """The output's elements as same-sized integers (bitwise comparison, NaN and -0 included)."""
    if isinstance(out, torch.Tensor):
        return out.view({4: torch.int32, 2: torch.int16}[out.element_size()]).numpy()
    return out.view({4: np.int32, 2: np.int16}[out.itemsize])


def as_numpy(x):
    """A torch tensor's elements as numpy (bf16: uint16 bits), keeping its strides."""
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16)
    return x.numpy()


class SharedMemoryCase(ServerTestCase):
    server_args = ("--allow_shared_memory",)

    def setUp(self):
        self.objects_before = shm_objects()

    def tearDown(self):
        self.client.unregister_shared_memory()
        for layer in self.client.list_layers():
            self.client.unload_layer(layer.spec.name)
        self.assertEqual(shm_objects() - self.objects_before, set(), "objects left in /dev/shm")

    def assert_same(self, actual, expected):
        """Same kind, dtype, shape, memory order and bits."""
        self.assertIs(type(actual), type(expected))
        self.assertEqual(actual.dtype, expected.dtype)
        self.assertEqual(tuple(actual.shape), tuple(expected.shape))
        strides = (lambda a: a.stride()) if isinstance(actual, torch.Tensor) else (
            lambda a: a.strides)
        self.assertEqual(strides(actual), strides(expected))
        np.testing.assert_array_equal(bits(actual), bits(expected))


class SharedMemoryForwardTest(SharedMemoryCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.generator = torch.Generator().manual_seed(shapes.seed())

    def tearDown(self):
        registered = self.client.shared_memory_status()
        super().tearDown()
        self.assertEqual(registered, [], "regions left registered")

    def load(self, name, shape, dtype):
        x, weight, bias = shapes.random_problem(shape, dtype, self.generator)
        precision = "exact" if dtype == torch.float32 else None
        self.client.load_layer(name, weight, bias, precision=precision,
                               **shapes.conv_kwargs(shape))
        return x

    def test_every_shape_dtype_and_layout_matches_in_band_bitwise(self):
        for shape in shapes.read_shapes():
            for dtype in DTYPES:
                name = f"{shape.name}.{str(dtype).split('.')[-1]}"
                x = self.load(name, shape, dtype)
                for memory_format in (torch.contiguous_format, torch.channels_last):
                    with self.subTest(shape=shape.name, dtype=str(dtype),
                                      memory_format=str(memory_format)):
                        x = x.to(memory_format=memory_format)
                        with convserve.SharedMemoryForward(self.client, name, x.shape,
                                                           layout=memory_format) as conv:
                            self.assertEqual(conv.dtype, convserve.tensors.wire_dtype(dtype))
                            self.assert_same(conv.forward(x), self.client.forward(name, x))
                            self.assert_same(conv.forward(as_numpy(x)),
                                             self.client.forward(name, as_numpy(x)))
                            first = x[:1]  # fewer samples than the object holds
                            self.assert_same(conv.forward(first),
                                             self.client.forward(name, first))
                self.client.unload_layer(name)

    def test_outputs_are_copies_and_layouts_convert(self):
        shape = shapes.read_shapes()[0]
        x = self.load("conv", shape, torch.float16)
        other = torch.randn(x.shape, generator=self.generator).half()
        with convserve.SharedMemoryForward(self.client, "conv", x.shape,
                                           output_layout="nhwc") as conv:
            first = conv.forward(x)
            conv.forward(other)  # overwrites both ranges; `first` must not change
            expected = self.client.forward("conv", x, output_layout="nhwc")
            self.assert_same(first, expected)
            self.assertTrue(first.is_contiguous(memory_format=torch.channels_last))
            # A channels-last input is transposed into the object's NCHW range.
            self.assert_same(conv.forward(x.to(memory_format=torch.channels_last)), expected)

    def test_threads_sharing_one_object(self):
        weight, bias = torch.randn(16, 8, 3, 3), torch.randn(16)
        self.client.load_layer("shared", weight, bias, padding=1, precision="exact")
        inputs = [torch.randn(2, 8, 10, 12) for _ in range(24)]
        results = [None] * len(inputs)
        with convserve.SharedMemoryForward(self.client, "shared", (2, 8, 10, 12)) as conv:
            def worker(first):
                for i in range(first, len(inputs), 4):
                    results[i] = conv.forward(inputs[i])

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for x, out in zip(inputs, results):
            self.assert_same(out, self.client.forward("shared", x))

    def test_close_unregisters_and_removes_the_object(self):
        self.client.load_layer("c", torch.randn(8, 4, 3, 3), padding=1)
        with convserve.SharedMemoryForward(self.client, "c", (2, 4, 9, 9), name="mine") as conv:
            self.assertTrue(conv.key.startswith("/"))
            self.assertTrue(os.path.exists(SHM_DIR + conv.key))
            (region,) = self.client.shared_memory_status("mine")
            self.assertEqual((region.name, region.key, region.offset),
                             ("mine", conv.key, 0))
            self.assertEqual(region.byte_size, os.path.getsize(SHM_DIR + conv.key))
        self.assertFalse(os.path.exists(SHM_DIR + conv.key))
        with self.assertRaises(convserve.NotFoundError):
            self.client.shared_memory_status("mine")
        conv.close()  # a second close does nothing
        with self.assertRaisesRegex(ValueError, "closed"):
            conv.forward(torch.randn(2, 4, 9, 9))

    def test_close_after_someone_unregistered_everything(self):
        self.client.load_layer("c", torch.randn(8, 4, 3, 3), padding=1)
        conv = convserve.SharedMemoryForward(self.client, "c", (1, 4, 9, 9))
        self.client.unregister_shared_memory()
        with self.assertRaises(convserve.NotFoundError):
            conv.forward(torch.randn(1, 4, 9, 9))
        conv.close()
        self.assertFalse(os.path.exists(SHM_DIR + conv.key))

    def test_argument_errors(self):
        with self.assertRaises(convserve.NotFoundError):
            convserve.SharedMemoryForward(self.client, "missing", (1, 4, 9, 9))
        self.client.load_layer("c", torch.randn(8, 4, 3, 3), padding=1)
        with self.assertRaises(ValueError):
            convserve.SharedMemoryForward(self.client, "c", (4, 9, 9))
        self.client.load_layer("valid", torch.randn(8, 4, 3, 3))
        with self.assertRaises(ValueError):  # no output: 1x1 input, 3x3 kernel, no padding
            convserve.SharedMemoryForward(self.client, "valid", (1, 4, 1, 1))
        with self.assertRaises(convserve.InvalidArgumentError):  # a bad region name
            convserve.SharedMemoryForward(self.client, "c", (1, 4, 9, 9), name="bad name!")
        with convserve.SharedMemoryForward(self.client, "c", (2, 4, 9, 9)) as conv:
            for wrong in (torch.randn(3, 4, 9, 9), torch.randn(2, 4, 9, 8),
                          torch.randn(4, 9, 9)):
                with self.assertRaises(ValueError):
                    conv.forward(wrong)
            with self.assertRaises(TypeError):
                conv.forward(torch.randn(2, 4, 9, 9).half())
            with self.assertRaises(TypeError):
                conv.forward(np.zeros((2, 4, 9, 9), np.float64))
            self.client.unload_layer("c")
            with self.assertRaises(convserve.NotFoundError):
                conv.forward(torch.randn(2, 4, 9, 9))


class RegionsAndHandBuiltRequestsTest(SharedMemoryCase):

    def setUp(self):
        super().setUp()
        self.shm = shared_memory.SharedMemory(create=True, size=1 << 16)
        self.key = "/" + self.shm.name

    def tearDown(self):
        self.shm.close()
        self.shm.unlink()
        super().tearDown()

    def test_register_status_unregister(self):
        self.client.register_shared_memory("b", self.key, 1 << 16)
        self.client.register_shared_memory("a", self.key, 1024, offset=512)
        regions = self.client.shared_memory_status()
        self.assertEqual([(r.name, r.key, r.offset, r.byte_size) for r in regions],
                         [("a", self.key, 512, 1024), ("b", self.key, 0, 1 << 16)])
        self.assertEqual([r.name for r in self.client.shared_memory_status("b")], ["b"])
        with self.assertRaises(convserve.AlreadyExistsError):
            self.client.register_shared_memory("a", self.key, 8)
        self.client.unregister_shared_memory("a")
        with self.assertRaises(convserve.NotFoundError):
            self.client.shared_memory_status("a")
        with self.assertRaises(convserve.NotFoundError) as caught:
            self.client.unregister_shared_memory("a")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("'a'", caught.exception.details)
        self.client.register_shared_memory("c", self.key, 8)
        self.client.unregister_shared_memory()  # every region
        self.assertEqual(self.client.shared_memory_status(), [])

    def test_register_errors(self):
        for key in ("no_slash", "/", "/a/b", "/..", "/x y"):
            with self.subTest(key=key), self.assertRaises(convserve.InvalidArgumentError):
                self.client.register_shared_memory("r", key, 8)
        with self.assertRaises(convserve.NotFoundError):
            self.client.register_shared_memory("r", self.key + "_missing", 8)
        with self.assertRaises(convserve.InvalidArgumentError):  # past the object's end
            self.client.register_shared_memory("r", self.key, 1024, offset=(1 << 16) - 512)
        with self.assertRaises(convserve.InvalidArgumentError):
            self.client.register_shared_memory("r", self.key, 0)
        with self.assertRaises(convserve.InvalidArgumentError):
            self.client.register_shared_memory("bad name!", self.key, 8)

    def test_one_tensor_in_shared_memory_the_other_in_the_message(self):
        self.client.load_layer("c", torch.randn(8, 4, 3, 3), torch.randn(8), padding=1,
                               precision="exact")
        self.client.register_shared_memory("r", self.key, 1 << 16)
        x = np.random.standard_normal((2, 4, 9, 9)).astype(np.float32)
        expected = self.client.forward("c", x)
        buffer = self.shm.buf
        buffer[:x.nbytes] = x.tobytes()
        request = pb.ForwardRequest(layer="c", input=pb.Tensor(
            dtype=pb.DATA_TYPE_FP32, layout=pb.LAYOUT_NCHW, shape=x.shape,
            shared_memory=pb.SharedMemoryRange(region="r", byte_size=x.nbytes)))
        reply = self.client.forward_message(request)
        self.assertFalse(reply.output.HasField("shared_memory"))
        out = np.frombuffer(reply.output.data, np.float32).reshape(tuple(reply.output.shape))
        self.assert_same(out, expected)

        out_offset = 1 << 15
        request = pb.ForwardRequest(
            layer="c", input=pb.Tensor(dtype=pb.DATA_TYPE_FP32, layout=pb.LAYOUT_NCHW,
                                       shape=x.shape, data=x.tobytes()),
            output_shared_memory=pb.SharedMemoryRange(region="r", offset=out_offset,
                                                      byte_size=expected.nbytes + 100))
        reply = self.client.forward_message(request)
        self.assertEqual(reply.output.data, b"")
        self.assertEqual(tuple(reply.output.shape), expected.shape)
        self.assertEqual(reply.output.shared_memory.region, "r")
        self.assertEqual(reply.output.shared_memory.offset, out_offset)
        # A copy at once: a view of the mapping would stop tearDown from closing it.
        out = np.frombuffer(buffer, np.float32, expected.size, out_offset).copy()
        self.assert_same(out.reshape(expected.shape), expected)

    def test_bad_ranges(self):
        self.client.load_layer("c", torch.randn(8, 4, 3, 3), padding=1)
        self.client.register_shared_memory("r", self.key, 4096)
        shape, nbytes = (1, 4, 8, 8), 4 * 4 * 8 * 8

        def forward(input_range=None, output_range=None, data=b""):
            request = pb.ForwardRequest(layer="c", input=pb.Tensor(
                dtype=pb.DATA_TYPE_FP32, layout=pb.LAYOUT_NCHW, shape=shape, data=data,
                shared_memory=input_range))
            if output_range is not None:
                request.output_shared_memory.CopyFrom(output_range)
            return self.client.forward_message(request)

        in_range = pb.SharedMemoryRange(region="r", byte_size=nbytes)
        with self.assertRaises(convserve.NotFoundError):
            forward(pb.SharedMemoryRange(region="other", byte_size=nbytes))
        with self.assertRaises(convserve.InvalidArgumentError):  # past the region's end
            forward(pb.SharedMemoryRange(region="r", offset=4096 - 8, byte_size=nbytes))
        with self.assertRaises(convserve.InvalidArgumentError):  # data and shared memory both
            forward(in_range, data=bytes(nbytes))
        with self.assertRaises(convserve.InvalidArgumentError):  # range not the input's size
            forward(pb.SharedMemoryRange(region="r", byte_size=nbytes - 4))
        with self.assertRaises(convserve.InvalidArgumentError):  # output range too small
            forward(in_range, pb.SharedMemoryRange(region="r", offset=2048, byte_size=64))
        forward(in_range, pb.SharedMemoryRange(region="r", offset=2048, byte_size=2048))


class SharedMemoryOffTest(ServerTestCase):
    """A server started without --allow_shared_memory refuses all of it."""

    def test_failed_precondition_everywhere(self):
        before = shm_objects()
        calls = (lambda: self.client.register_shared_memory("r", "/anything", 8),
                 lambda: self.client.unregister_shared_memory(),
                 lambda: self.client.shared_memory_status())
        for call in calls:
            with self.assertRaises(convserve.FailedPreconditionError) as caught:
                call()
            self.assertIn("--allow_shared_memory", caught.exception.details)
        self.client.load_layer("c", torch.randn(8, 4, 3, 3), padding=1)
        with self.assertRaises(convserve.FailedPreconditionError):
            convserve.SharedMemoryForward(self.client, "c", (1, 4, 8, 8))
        request = pb.ForwardRequest(layer="c", input=pb.Tensor(
            dtype=pb.DATA_TYPE_FP32, shape=(1, 4, 8, 8),
            shared_memory=pb.SharedMemoryRange(region="r", byte_size=1024)))
        with self.assertRaises(convserve.FailedPreconditionError):
            self.client.forward_message(request)
        self.assertEqual(shm_objects(), before)


if __name__ == "__main__":
    unittest.main()
