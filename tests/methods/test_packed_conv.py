"""Convolutions with weights in oneDNN's layout: equal to the plain operations, and a safe fall-back."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_widgets as xw
from xai_widgets.methods import packed_conv
from xai_widgets.methods.rules import clear_weight_cache

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="oneDNN is not part of this torch build"
)

GEOMETRIES = [  # in, out, kernel, stride, padding, dilation, groups, input size
    (8, 16, 3, 1, 1, 1, 1, 9),
    (8, 8, 3, 2, 1, 1, 8, 10),  # depthwise, stride 2, one row of output padding
    (16, 32, 5, 2, 2, 1, 4, 11),  # grouped
    (8, 8, 3, 1, 2, 2, 1, 12),  # dilated
    (16, 24, 1, 2, 0, 1, 1, 7),  # 1×1 strided
    (3, 8, 7, 2, 3, 1, 1, 17),
]


@pytest.fixture
def every_weight(monkeypatch):
    """Let small test weights take the path."""
    monkeypatch.setattr(packed_conv, "LARGE", 0)
    monkeypatch.setattr(packed_conv, "_ENABLED", [True])


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_and_transpose_equal_the_plain_operations(every_weight, geometry):
    cin, cout, k, stride, padding, dilation, groups, size = geometry
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False)
    weight = conv.weight.detach().abs()
    packed_conv.keep(weight)
    x = torch.randn(2, cin, size, size)
    z = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    got = packed_conv.conv(x, weight, stride, padding, dilation, groups)
    assert got is not None and got.is_contiguous()
    torch.testing.assert_close(got, z, rtol=1e-5, atol=1e-5)
    s = torch.randn_like(z)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        F.conv2d(leaf, weight, None, stride, padding, dilation, groups), leaf, s
    )
    got = packed_conv.conv_transpose(s, weight, x.shape[2:], **packed_conv.of_module(conv))
    assert got is not None and got.is_contiguous() and got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_only_kept_float32_contiguous_cpu_calls_take_the_path(every_weight):
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    weight = conv.weight.detach().clone()
    x = torch.randn(1, 4, 6, 6)
    assert packed_conv.conv(x, weight, padding=1) is None  # not kept
    packed_conv.keep(weight)
    assert packed_conv.conv(x, weight, padding=1) is not None
    assert packed_conv.conv(x.double(), weight, padding=1) is None
    assert packed_conv.conv(x.transpose(2, 3), weight, padding=1) is None
    assert packed_conv.conv(x[0], weight, padding=1) is None  # unbatched
    assert packed_conv.conv(x, weight, padding="same") is None
    conv.padding_mode = "reflect"
    assert packed_conv.of_module(conv) is None


def test_a_weight_changed_in_place_is_reordered_again(every_weight):
    weight = torch.randn(8, 4, 3, 3)
    packed_conv.keep(weight)
    x = torch.randn(1, 4, 6, 6)
    packed_conv.conv(x, weight, padding=1)
    weight.mul_(-2)
    torch.testing.assert_close(packed_conv.conv(x, weight, padding=1), F.conv2d(x, weight, None, 1, 1))


def test_a_failing_op_switches_the_path_off(every_weight, monkeypatch):
    weight = torch.randn(8, 4, 3, 3)
    packed_conv.keep(weight)

    def refuse(*args):
        raise RuntimeError("not in this build")

    monkeypatch.setattr(packed_conv, "_forward", refuse)
    assert packed_conv.conv(torch.randn(1, 4, 6, 6), weight, padding=1) is None
    assert packed_conv._ENABLED == [False]
    assert packed_conv.conv_transpose(torch.randn(1, 8, 6, 6), weight, (6, 6), padding=1) is None


def test_backtrace_runs_a_convolution_with_the_arguments_it_was_called_with(every_weight, monkeypatch):
    """A reflect-padded Conv2d pads its input itself and calls conv2d with padding 0."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2, padding_mode="reflect"),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip
    x, target = torch.randn(2, 3, 10, 10), torch.tensor([0, 3])
    clear_weight_cache()
    on = xw.explain(model, x, target, "backtrace_contrastive")
    assert on.score.shape == (2,)
    torch.testing.assert_close(on.score, model(x).gather(1, target[:, None])[:, 0], rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(packed_conv, "_ENABLED", [False])
    off = xw.explain(model, x, target, "backtrace_contrastive")
    torch.testing.assert_close(on.attribution, off.attribution, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["backtrace", "backtrace_contrastive", "lrp_composite"])
def test_explanations_agree_with_the_path_off(resnet18, method, monkeypatch):
    """resnet18's 256- and 512-channel layers take the path at the default threshold."""
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([1, 7])
    clear_weight_cache()
    on = xw.explain(resnet18, x, target, method)
    assert any(packed_conv._KEPT.get(w) for w in list(packed_conv._KEPT.keys()))
    monkeypatch.setattr(packed_conv, "_ENABLED", [False])
    off = xw.explain(resnet18, x, target, method)
    scale = off.attribution.abs().amax()
    torch.testing.assert_close(on.attribution / scale, off.attribution / scale, rtol=0, atol=1e-5)
