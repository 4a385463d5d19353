"""The client's array codec and argument checks, without a server: layouts read from strides,
bfloat16 bits, byte order, and the round trip encode -> wire Tensor -> decode."""

import unittest

import numpy as np
import torch

import convserve
from convserve import pb, tensors


def echo(x):
    """Encodes x, then decodes the very same wire tensor: what a 1x1 identity layer returns."""
    tensor, decoder = tensors.encode(x)
    return tensor, tensors.decode(tensor, decoder)


class LayoutTest(unittest.TestCase):

    def test_torch_memory_formats(self):
        for c in (1, 3):  # C == 1 is ambiguous by size-1-insensitive strides
            x = torch.randn(2, c, 4, 5)
            tensor, back = echo(x)
            self.assertEqual(tensor.layout, pb.LAYOUT_NCHW)
            self.assertEqual(list(tensor.shape), [2, c, 4, 5])
            self.assertTrue(back.is_contiguous())
            self.assertTrue(torch.equal(back, x))

            x = x.to(memory_format=torch.channels_last)
            tensor, back = echo(x)
            self.assertEqual(tensor.layout, pb.LAYOUT_NHWC)
            self.assertEqual(tensor.data, x.permute(0, 2, 3, 1).contiguous().numpy().tobytes())
            self.assertTrue(back.is_contiguous(memory_format=torch.channels_last))
            self.assertTrue(torch.equal(back, x))

    def test_numpy_strides(self):
        nhwc = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
        x = nhwc.transpose(0, 3, 1, 2)  # NCHW shape over NHWC memory
        tensor, back = echo(x)
        self.assertEqual(tensor.layout, pb.LAYOUT_NHWC)
        self.assertEqual(tensor.data, nhwc.tobytes())  # no transposing copy
        np.testing.assert_array_equal(back, x)
        self.assertTrue(back.flags.writeable)

        strided = np.arange(2 * 3 * 8 * 10, dtype=np.float32).reshape(2, 3, 8, 10)[:, :, ::2, 1::3]
        tensor, back = echo(strided)
        self.assertEqual(tensor.layout, pb.LAYOUT_NCHW)
        np.testing.assert_array_equal(back, strided)

    def test_big_endian_arrays_go_little_endian(self):
        x = np.arange(24, dtype=">f4").reshape(1, 2, 3, 4)
        tensor, back = echo(x)
        self.assertEqual(tensor.data, x.astype("<f4").tobytes())
        np.testing.assert_array_equal(back, x)

    def test_dtypes(self):
        for dtype, wire in ((torch.float32, pb.DATA_TYPE_FP32), (torch.float16, pb.DATA_TYPE_FP16),
                            (torch.bfloat16, pb.DATA_TYPE_BF16)):
            x = torch.randn(1, 2, 3, 3).to(dtype)
            tensor, back = echo(x)
            self.assertEqual(tensor.dtype, wire)
            self.assertEqual(back.dtype, dtype)
            self.assertTrue(torch.equal(back, x))
        tensor, back = echo(np.zeros((1, 1, 2, 2), np.uint16))
        self.assertEqual(tensor.dtype, pb.DATA_TYPE_BF16)
        self.assertEqual(back.dtype, np.uint16)

    def test_rejected_inputs(self):
        with self.assertRaisesRegex(TypeError, "float32, float16 and bfloat16"):
            tensors.encode(np.zeros((1, 1, 2, 2)))  # float64
        with self.assertRaisesRegex(TypeError, "float32, float16 and bfloat16"):
            tensors.encode(torch.zeros(1, 1, 2, 2, dtype=torch.int32))
        with self.assertRaisesRegex(ValueError, "4-D"):
            tensors.encode(np.zeros((2, 2), np.float32))

    def test_malformed_reply_is_an_error(self):
        tensor, decoder = tensors.encode(torch.zeros(1, 2, 2, 2))
        tensor.data = tensor.data[:-4]
        with self.assertRaises(convserve.ConvserveError):
            tensors.decode(tensor, decoder)


class SharedMemoryCodecTest(unittest.TestCase):
    """write() puts into a buffer the bytes encode() would send, in the layout asked for;
    decode(data=...) copies the elements out of a (longer) buffer."""

    @staticmethod
    def in_layout(x, layout):
        """x's values stored in `layout`, as encode() takes them."""
        if tensors.is_torch_tensor(x):
            nhwc = layout == pb.LAYOUT_NHWC
            return x.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        if layout == pb.LAYOUT_NHWC:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def test_write_matches_encode_in_either_layout(self):
        nhwc = np.arange(2 * 4 * 5 * 3, dtype=">f4").reshape(2, 4, 5, 3)
        for x in (torch.randn(2, 3, 4, 5).bfloat16(), torch.randn(2, 1, 4, 5).half(),
                  nhwc.transpose(0, 3, 1, 2), convserve.to_bfloat16_bits(nhwc)[:, ::2]):
            for layout in (pb.LAYOUT_NCHW, pb.LAYOUT_NHWC):
                with self.subTest(x=type(x).__name__, dtype=str(x.dtype), layout=layout):
                    expected, _ = tensors.encode(self.in_layout(x, layout))
                    self.assertEqual(expected.layout, layout)
                    buffer = bytearray(len(expected.data) + 8)
                    dtype, decoder = tensors.write(x, memoryview(buffer)[4:-4], layout)
                    self.assertEqual(dtype, expected.dtype)
                    self.assertEqual(bytes(buffer[4:-4]), expected.data)
                    tensor = pb.Tensor(dtype=dtype, layout=layout, shape=expected.shape)
                    back = tensors.decode(tensor, decoder, memoryview(buffer)[4:])
                    buffer[:] = bytes(len(buffer))  # `back` is a copy: unchanged
                    self.assertIs(type(back), type(x))
                    if tensors.is_torch_tensor(x):
                        self.assertTrue(torch.equal(back, x))
                    else:
                        np.testing.assert_array_equal(back, x)

    def test_buffer_shorter_than_the_output_is_an_error(self):
        _, decoder = tensors.write(np.zeros((1, 1, 1, 1), np.float32), bytearray(4),
                                   pb.LAYOUT_NCHW)
        tensor = pb.Tensor(dtype=pb.DATA_TYPE_FP32, layout=pb.LAYOUT_NCHW, shape=(1, 2, 2, 2))
        with self.assertRaises(convserve.ConvserveError):
            tensors.decode(tensor, decoder, bytes(28))


class Bfloat16Test(unittest.TestCase):

    def test_matches_torch_rounding(self):
        values = np.concatenate([np.random.standard_normal(10000).astype(np.float32) * 1e3,
                                 np.array([0.0, -0.0, 1.00390625, 1.01171875, np.inf, -np.inf,
                                           3.4e38], np.float32)])
        ours = convserve.to_bfloat16_bits(values)
        theirs = torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(convserve.from_bfloat16_bits(ours),
                                      torch.from_numpy(values).bfloat16().float().numpy())
        self.assertTrue(np.isnan(convserve.from_bfloat16_bits(
            convserve.to_bfloat16_bits(np.array([np.nan], np.float32))))[0])

    def test_weights_converted_to_layer_dtype(self):
        w = np.random.standard_normal((4, 2, 3, 3)).astype(np.float32)
        for dtype, expected in (("fp16", w.astype(np.float16).tobytes()),
                                ("bf16", convserve.to_bfloat16_bits(w).tobytes()),
                                ("fp32", w.tobytes())):
            wire, data, bias = tensors.encode_weights(w, None, dtype)
            self.assertEqual(data, expected)
            self.assertEqual(bias, b"")
        wire, data, _ = tensors.encode_weights(torch.from_numpy(w), None, torch.bfloat16)
        self.assertEqual(wire, pb.DATA_TYPE_BF16)
        self.assertEqual(data, convserve.to_bfloat16_bits(w).tobytes())


class ClientArgumentTest(unittest.TestCase):
    """Mistakes caught before any RPC (the target does not even exist)."""

    def setUp(self):
        self.client = convserve.Client("127.0.0.1:1")

    def tearDown(self):
        self.client.close()

    def test_padding_strings(self):
        with self.assertRaisesRegex(ValueError, "pads one more row"):
            self.client.load_layer("x", np.zeros((2, 2, 2, 2), np.float32), padding="same")
        with self.assertRaisesRegex(ValueError, "stride 1"):
            self.client.load_layer("x", np.zeros((2, 2, 3, 3), np.float32), padding="same",
                                   stride=2)
        with self.assertRaisesRegex(ValueError, "padding must be"):
            self.client.load_layer("x", np.zeros((2, 2, 3, 3), np.float32), padding="full")

    def test_named_options(self):
        with self.assertRaisesRegex(ValueError, "unknown activation"):
            self.client.load_layer("x", np.zeros((2, 2, 3, 3), np.float32), activation="elu")
        with self.assertRaisesRegex(ValueError, "4-D"):
            self.client.load_layer("x", np.zeros((2, 2, 3), np.float32))

    def test_remote_conv2d_needs_a_server(self):
        with self.assertRaisesRegex(ValueError, "client= or target="):
            convserve.RemoteConv2d(2, 2, 3)
        with self.assertRaisesRegex(ValueError, "padding_mode='replicate'"):
            convserve.RemoteConv2d(2, 2, 3, padding_mode="replicate", client=self.client)


if __name__ == "__main__":
    unittest.main()
