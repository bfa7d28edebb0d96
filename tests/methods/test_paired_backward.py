"""paired_grad: two gradient streams through one autograd pass equal two separate backward passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xai_widgets.errors import UnsupportedModelError
from xai_widgets.methods.paired_backward import paired_grad


class _Scale(torch.autograd.Function):
    """x k + offset, with non-tensor arguments and a tensor argument that needs no gradient."""

    @staticmethod
    def forward(ctx, x, k, offset, note):
        ctx.k = k
        return x * k + offset

    @staticmethod
    def backward(ctx, g):
        return g * ctx.k, None, None, None


def _graph(x: torch.Tensor, other: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Custom and built-in nodes: a node with two outputs (split), max pooling, slicing, broadcasting, a
    concatenation, a reduction, a matrix product, and a branch from a second leaf that never reaches ``x``."""
    y = _Scale.apply(x, 2.0, torch.ones(()), "note")
    a, b = y.split([2, 3], 1)
    pooled = F.max_pool2d(a, 2)
    mixed = b[:, :1, ::2, ::2] * 3 + pooled.mean(1, keepdim=True)
    out = torch.cat([pooled, mixed, F.relu(a[:, :1, 1::2, 1::2])], 1).flatten(1) @ matrix
    return out + other.sum()


def test_two_streams_equal_two_backward_passes():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 6, generator=generator, requires_grad=True)
    other = torch.randn(3, generator=generator, requires_grad=True)
    matrix = torch.randn(36, 4, generator=generator)
    first, second = torch.randn(2, 4, generator=generator), torch.randn(2, 4, generator=generator)
    expected = [torch.autograd.grad(_graph(x, other, matrix), x, g)[0] for g in (first, second)]
    calls = []
    got = paired_grad(_graph(x, other, matrix), x, first, second, calls.append)
    for value, reference in zip(got, expected):
        torch.testing.assert_close(value, reference)
    # before each second-stream call the rules get the first stream's gradients at the node, after it None
    assert calls and len(calls) % 2 == 0
    assert all(isinstance(c, tuple) for c in calls[::2]) and all(c is None for c in calls[1::2])


def test_an_output_that_does_not_depend_on_the_source_gives_zeros():
    x = torch.randn(2, 3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    for out in ((w * 2).expand(2, 3), torch.ones(2, 3)):
        first, second = paired_grad(out, x, torch.ones(2, 3), torch.ones(2, 3), lambda _: None)
        assert torch.equal(first, torch.zeros_like(x)) and torch.equal(second, torch.zeros_like(x))


class _Refuse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 1

    @staticmethod
    def backward(ctx, g):
        raise UnsupportedModelError("no rule here")


def test_an_error_in_a_backward_reaches_the_caller_as_raised():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(UnsupportedModelError, match="no rule here"):
        paired_grad(_Refuse.apply(x).sin(), x, torch.ones(3), torch.ones(3), lambda _: None)
