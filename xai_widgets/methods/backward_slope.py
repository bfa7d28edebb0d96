"""The backward-slope rule: ReLU and Leaky ReLU keep their forward and use another negative slope backwards.

Linse, Barth and Martinetz (IJCNN 2024, arXiv 2410.16958, "ProxyGrad") take the gradient for activation
maximization from a proxy network with the same weights and a larger negative slope. At one activation
a = φ_α(x) (forward slope α; α = 0 for ReLU) the rule is

    g_in = g_out           where x > 0,
    g_in = β · g_out       elsewhere (β: the backward slope),

so β = α gives autograd's own gradient, β = 1 lets every activation pass the gradient unchanged (the gradient of
the same network with identity activations), and the forward values are never changed.

The rule sits on every ``nn.ReLU``/``nn.LeakyReLU`` module (a forward hook, :class:`BackwardSlope`) and on the
functional calls made outside them (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.leaky_relu``, in place or
not), which reach it through :mod:`.intercept`. :meth:`ModelAdapter.backward_slope` installs both and removes
them in ``finally``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MethodError
from .intercept import ModuleStack, OpCall, OpRules
from .rules import Rule

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
_RELU_CALLS = (F.relu, torch.relu, Tensor.relu, torch.relu_, Tensor.relu_)
_LEAKY_CALLS = (F.leaky_relu, F.leaky_relu_)


def check_slope(slope: Any) -> float:
    """A backward slope is a number in [0, 1] (0: ReLU's gradient, 1: identity)."""
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope):
        raise MethodError(f"the backward slope must be a number in [0, 1], got {slope!r}")
    if not 0.0 <= slope <= 1.0:
        raise MethodError(f"the backward slope must lie in [0, 1] (0: ReLU, 1: identity), got {slope}")
    return float(slope)


class _SlopeBackward(torch.autograd.Function):
    """Identity on the activation's output ``a``; backward: g where the input was positive, β·g elsewhere."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, a: Tensor, forward_slope: float, slope: float) -> Tensor:
        ctx.slope = slope
        # with α ≥ 0 the output has the input's sign, so the output (kept anyway) tells where x > 0
        ctx.from_output = forward_slope >= 0
        ctx.save_for_backward(a if ctx.from_output else x > 0)
        return a

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (saved,) = ctx.saved_tensors
        if not ctx.from_output:
            return torch.where(saved, grad, grad * ctx.slope), None, None, None
        if ctx.slope == 0.0:  # ReLU's own backward kernel
            return torch.ops.aten.threshold_backward(grad, saved, 0.0), None, None, None
        return torch.ops.aten.leaky_relu_backward(grad, saved, ctx.slope, True), None, None, None


def with_slope(x: Tensor, a: Tensor, forward_slope: float, slope: float) -> Tensor:
    """The activation output ``a`` of ``x`` (forward slope ``forward_slope``) with backward slope ``slope``."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return a
    return _SlopeBackward.apply(x, a.detach(), forward_slope, slope)


def forward_slope(module: nn.Module) -> float:
    """The negative slope of a ReLU (0) or LeakyReLU module's forward."""
    return float(module.negative_slope) if isinstance(module, nn.LeakyReLU) else 0.0


class BackwardSlope(Rule):
    """The rule at one ``nn.ReLU``/``nn.LeakyReLU`` module: its output, with backward slope ``slope``."""

    def __init__(self, slope: float) -> None:
        self.slope = check_slope(slope)

    def forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        return with_slope(inputs[0], output, forward_slope(module), self.slope)

    def functional(self, call: OpCall) -> Any:
        """The rule at a functional ReLU/Leaky-ReLU call made outside an activation module (see intercept)."""
        x = call.args[0] if call.args else None
        if isinstance(call.module, ACTIVATIONS) or not isinstance(x, Tensor) or not x.requires_grad:
            return NotImplemented
        alpha = 0.0
        if call.func in _LEAKY_CALLS:
            alpha = float(call.kwargs.get("negative_slope", call.args[1] if len(call.args) > 1 else 0.01))
        with torch.no_grad():
            out = call.run()
        return call.finish(_SlopeBackward.apply(x, out, alpha, self.slope))


def slope_rules(model: nn.Module, slope: float) -> dict[nn.Module, BackwardSlope]:
    """Where the rule goes: every ReLU and LeakyReLU module of ``model``."""
    rule = BackwardSlope(slope)
    return {module: rule for module in model.modules() if isinstance(module, ACTIVATIONS)}


@contextlib.contextmanager
def functional_slope(model: nn.Module, slope: float) -> Iterator[None]:
    """Within the block, functional ReLU/Leaky-ReLU calls of ``model``'s code use backward slope ``slope``."""
    rule = BackwardSlope(slope)
    handlers = dict.fromkeys((*_RELU_CALLS, *_LEAKY_CALLS), rule.functional)
    with ModuleStack(model) as stack, OpRules(handlers, stack=stack):
        yield
