"""RemoteConv2d and swap_conv2d against the real server (CPU backend): remote models match
the same model run locally; weights are re-uploaded when they change; unsupported convs are
refused before anything changes."""

import copy
import pickle
import threading
import unittest

import torch
from torch import nn

import convserve
import shapes
from server_process import ServerTestCase


def small_model():
    """Convs of every flavour the service handles, between ordinary local layers."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=False),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32),  # depthwise
        nn.Conv2d(32, 24, 2, padding="same"),  # even kernel: asymmetric 'same' padding
        nn.Conv2d(24, 24, (3, 5), padding="same", dilation=(2, 1)),
        nn.Conv2d(24, 8, 1, padding="valid"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


class RemoteConv2dTest(ServerTestCase):

    def setUp(self):
        torch.manual_seed(shapes.seed())

    def tearDown(self):
        for layer in self.client.list_layers():
            self.client.unload_layer(layer.spec.name)

    def assertClose(self, actual, expected, tolerance=1e-5):
        self.assertEqual(tuple(actual.shape), tuple(expected.shape))
        self.assertLess(shapes.rel_l2(actual, expected), tolerance)

    def test_constructed_like_conv2d(self):
        remote = convserve.RemoteConv2d(6, 12, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                                        dilation=(1, 2), groups=3, bias=True,
                                        client=self.client, name="constructed")
        self.assertIsInstance(remote, nn.Conv2d)
        local = nn.Conv2d(6, 12, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=3)
        local.load_state_dict(remote.state_dict())
        x = torch.randn(3, 6, 11, 13)
        with torch.no_grad():
            self.assertClose(remote(x), local(x).double())
        self.assertEqual([l.spec.name for l in self.client.list_layers()], ["constructed"])
        self.assertIn("constructed", repr(remote))

    def test_target_makes_its_own_client(self):
        remote = convserve.RemoteConv2d(4, 4, 1, target=self.server.target)
        x = torch.randn(1, 4, 3, 3)
        with torch.no_grad():
            self.assertClose(remote(x), nn.functional.conv2d(x, remote.weight, remote.bias))
        remote.release()
        self.assertEqual(self.client.list_layers(), [])

    def test_from_conv2d_shares_parameters(self):
        conv = nn.Conv2d(8, 16, 3, padding=1)
        remote = convserve.RemoteConv2d.from_conv2d(conv, self.client)
        self.assertIs(remote.weight, conv.weight)
        self.assertIs(remote.bias, conv.bias)
        x = torch.randn(2, 8, 9, 9)
        with torch.no_grad():
            self.assertClose(remote(x), conv(x))

    def test_weights_reuploaded_after_change_and_after_server_lost_them(self):
        conv = nn.Conv2d(4, 8, 3, padding=1)
        remote = convserve.RemoteConv2d.from_conv2d(conv, self.client, name="changing")
        x = torch.randn(1, 4, 6, 6)
        with torch.no_grad():
            self.assertClose(remote(x), conv(x))
            first = self.client.list_layers()[0].generation
            remote(x)  # unchanged weights: no second upload
            self.assertEqual(self.client.list_layers()[0].generation, first)

            conv.weight.mul_(-2.0)  # in-place edit
            self.assertClose(remote(x), conv(x))
            remote.load_state_dict({"weight": torch.randn(8, 4, 3, 3), "bias": torch.randn(8)})
            self.assertClose(remote(x), conv(x))
            remote.weight = nn.Parameter(torch.randn(8, 4, 3, 3))  # a new Parameter
            self.assertClose(remote(x), nn.functional.conv2d(x, remote.weight, remote.bias,
                                                             padding=1))
            self.client.unload_layer("changing")  # e.g. a server restart
            self.assertClose(remote(x), nn.functional.conv2d(x, remote.weight, remote.bias,
                                                             padding=1))

    def test_copies_get_their_own_server_layer(self):
        conv = nn.Conv2d(4, 8, 3, padding=1)
        remote = convserve.RemoteConv2d.from_conv2d(conv, self.client, name="original")
        x = torch.randn(1, 4, 6, 6)
        with torch.no_grad():
            remote(x)
            clone = copy.deepcopy(remote)
            self.assertIs(clone.client, self.client)  # the connection is shared
            clone.weight.mul_(3.0)
            self.assertClose(clone(x), nn.functional.conv2d(x, clone.weight, clone.bias,
                                                            padding=1))
            self.assertClose(remote(x), conv(x))  # the original's layer is untouched
            revived = pickle.loads(pickle.dumps(remote))  # reconnects to the same target
            self.assertClose(revived(x), conv(x))
        names = sorted(l.spec.name for l in self.client.list_layers())
        self.assertEqual(len(names), 3)
        self.assertIn("original", names)

    def test_half_and_bfloat16_modules(self):
        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=str(dtype)):
                remote = convserve.RemoteConv2d(8, 8, 3, padding=1, dtype=dtype,
                                                client=self.client)
                x = torch.randn(2, 8, 5, 5).to(dtype)
                with torch.no_grad():
                    out = remote(x)
                self.assertEqual(out.dtype, dtype)
                self.assertClose(out, shapes.reference(x, remote.weight, remote.bias, padding=1),
                                 shapes.TOLERANCE[dtype])
                with self.assertRaises(TypeError):
                    remote(x.float())

    def test_output_is_inference_only(self):
        remote = convserve.RemoteConv2d(2, 2, 1, client=self.client)
        out = remote(torch.randn(1, 2, 2, 2))  # grad mode on: parameters require grad
        self.assertTrue(out.requires_grad)
        with self.assertRaisesRegex(RuntimeError, "inference-only"):
            out.sum().backward()

    def test_unsupported_padding_modes_are_rejected(self):
        with self.assertRaisesRegex(ValueError, "padding_mode='reflect'"):
            convserve.RemoteConv2d(2, 2, 3, padding=1, padding_mode="reflect",
                                   client=self.client)
        model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3, padding=1,
                                                            padding_mode="circular"))
        with self.assertRaisesRegex(ValueError, r"swap_conv2d: 1: padding_mode='circular'"):
            convserve.swap_conv2d(model, self.client)
        self.assertEqual(type(model[0]), nn.Conv2d)  # nothing swapped

    def test_swap_conv2d_matches_local_model(self):
        model = small_model()
        x = torch.randn(4, 3, 20, 18)
        with torch.no_grad():
            expected = model.double()(x.double())
            model.float()
            swapped = convserve.swap_conv2d(copy.deepcopy(model), self.client, prefix="small")
            self.assertIs(type(swapped[0]), convserve.RemoteConv2d)
            self.assertEqual(sum(isinstance(m, nn.Conv2d) for m in swapped.modules()), 6)
            self.assertTrue(all(isinstance(m, convserve.RemoteConv2d)
                                for m in swapped.modules() if isinstance(m, nn.Conv2d)))
            out = swapped(x)
            self.assertClose(out, expected)
            names = sorted(l.spec.name for l in self.client.list_layers())
            self.assertEqual(names, ["small.0", "small.3", "small.5", "small.6", "small.7",
                                     "small.8"])
            # channels_last activations travel as NHWC and give the same answer.
            swapped = swapped.to(memory_format=torch.channels_last)
            self.assertClose(swapped(x.to(memory_format=torch.channels_last)), expected)
            # The state_dict is unchanged, so checkpoints load into the swapped model.
            self.assertEqual(set(swapped.state_dict()), set(model.state_dict()))
        convserve.release_remote_layers(swapped)
        self.assertEqual(self.client.list_layers(), [])

    def test_swapped_model_from_threads(self):
        model = small_model()
        swapped = convserve.swap_conv2d(copy.deepcopy(model), self.client)
        inputs = [torch.randn(1 + i % 2, 3, 16, 16) for i in range(12)]
        outputs = [None] * len(inputs)

        def run(i):
            with torch.no_grad():
                outputs[i] = swapped(inputs[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with torch.no_grad():
            for x, out in zip(inputs, outputs):
                self.assertClose(out, model(x))


if __name__ == "__main__":
    unittest.main()
