"""Canonizers: temporary fixes to the computation so that the rules apply where the model is not one module
per operation. They act during one forward only and never touch the user's model: no parameter, flag or
attribute is written (in-place ReLUs are made out-of-place by :meth:`ModelAdapter.no_inplace`, which
``adapter.rules`` enters and restores).

- :class:`MergeBatchNorm` folds a BatchNorm into the conv/linear layer whose output it normalises, so the LRP
  rule of that layer sees the affine map W' = diag(a) W, b' = a(b − μ) + β (zennit's ``MergeBatchNorm`` does
  the same by overwriting the parameters for the duration; here the folded map is formed from the parameters
  at forward time, which also works inside ``functional_call``).
- :class:`FunctionalRules` is a ``TorchFunctionMode`` that applies rules to operations that are not modules:
  the residual ``out += identity`` of torchvision's BasicBlock/Bottleneck (and any add of two branches) goes
  through the proportional :class:`~.rules.Sum` rule, so relevance is conserved through ResNets; averaging
  (``F.avg_pool2d``/``adaptive_avg_pool2d``, also inside the pooling modules, ``x.mean``, ``x.sum``,
  ``F.interpolate``) gets the proportional :class:`~.rules.Norm` rule; ``F.relu`` calls outside an ``nn.ReLU``
  get the ReLU rule of modified backprop, and in-place ones (``F.relu(x, inplace=True)`` in DenseNet) are made
  out-of-place when their result is assigned; a product of two activations (gating, attention), for which no
  rule is defined, raises UnsupportedModelError naming the module. This is zennit's ResNet canonizer (which
  swaps the block's ``forward`` for one that calls a ``Sum`` module) without rewriting any block, so it covers
  any architecture that adds branches with ``+``/``+=``.
"""

from __future__ import annotations

import dis
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedModelError
from .rules import Affine, Ledger, LinearRule, Norm, ReLURule, Rule, Sum

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_FILE = __file__

_RELU = {F.relu, torch.relu, Tensor.relu}
_RELU_INPLACE = {F.relu_, torch.relu_, Tensor.relu_}
_ADD = {torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__}
_SUB = {torch.sub, Tensor.sub, Tensor.sub_, Tensor.__sub__, Tensor.__isub__, torch.subtract, Tensor.subtract}
_INPLACE = {Tensor.add_, Tensor.sub_, Tensor.__iadd__, Tensor.__isub__}
_AVERAGE = {
    torch.mean,
    Tensor.mean,
    torch.sum,
    Tensor.sum,
    F.interpolate,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
}
AVERAGE_MODULES = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Upsample,
)
_PRODUCT = {
    torch.mul,
    Tensor.mul,
    Tensor.mul_,
    Tensor.__mul__,
    Tensor.__rmul__,
    Tensor.__imul__,
    torch.div,
    Tensor.div,
    Tensor.div_,
    Tensor.__truediv__,
    Tensor.__rtruediv__,
    torch.matmul,
    Tensor.matmul,
    Tensor.__matmul__,
    torch.bmm,
    torch.einsum,
    torch.baddbmm,
}


class MergeBatchNorm:
    """Fold BatchNorm into the preceding conv/linear for the LRP rules (one instance per call).

    ``track(rule)`` wraps the rule of a conv/linear layer so the layer's output is remembered;
    ``norm(fallback)`` is the rule for a BatchNorm: if its input is exactly such an output, the layer's rule
    is re-attached to the BatchNorm's output with the folded affine map and the layer's input, so relevance
    flows from the BatchNorm output straight to the conv input; otherwise (a BatchNorm after a pooling or an
    add) ``fallback`` treats the BatchNorm as the elementwise affine map it is in eval mode.
    """

    def __init__(self) -> None:
        self._produced: dict[int, tuple[Tensor, Affine, Tensor, LinearRule]] = {}
        self._started: list[bool] = [False]

    def track(self, rule: LinearRule, first: LinearRule | None = None) -> Rule:
        """``rule`` for the layer; ``first`` instead if this layer is the first Conv/Linear to run."""
        return _Tracked(rule, first, self._produced, self._started)

    def norm(self, fallback: LinearRule) -> Rule:
        return _FoldedNorm(fallback, self._produced)


class _Tracked(Rule):
    def __init__(
        self, rule: LinearRule, first: LinearRule | None, produced: dict, started: list[bool]
    ) -> None:
        self.rule, self.first, self.produced, self.started = rule, first, produced, started

    def forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        rule = self.rule if self.started[0] or self.first is None else self.first
        self.started[0] = True
        layer = Affine.of(module)
        out = rule.attach(layer, inputs[0], output)
        self.produced[id(out)] = (out, layer, inputs[0], rule)
        return out


class _FoldedNorm(Rule):
    def __init__(self, fallback: LinearRule, produced: dict) -> None:
        self.fallback, self.produced = fallback, produced

    def forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        entry = self.produced.get(id(inputs[0]))
        if entry is not None and entry[0] is inputs[0]:
            _, layer, x, rule = entry
            linear_2d = isinstance(layer.module, nn.Linear) and output.ndim == 2
            if linear_2d or not isinstance(layer.module, nn.Linear):
                return rule.attach(layer.folded(module), x, output)
        return self.fallback.forward_hook(module, inputs, output)


class FunctionalRules(TorchFunctionMode):
    """Apply rules to tensor operations made outside modules, during one forward (see the module docstring).

    Args:
        model: the model being explained (to name the module where an unsupported operation happens).
        source: the input tensor of this forward (a leaf that requires grad).
        method: the method's name, for error messages.
        relu: the ReLU rule (modified backprop's, or LRP's pass-through) applied to functional ReLU calls made
            outside ``nn.ReLU`` modules.
        add: the rule for adds/subtractions of two activations (LRP); with it, products of two activations
            raise UnsupportedModelError.
        average: the rule for averaging operations (LRP): average pooling (module or functional), mean, sum,
            interpolation.
        ledger: where the adds and averages report their relevance.
    """

    def __init__(
        self,
        model: nn.Module,
        source: Tensor,
        method: str,
        relu: ReLURule | None = None,
        add: Sum | None = None,
        average: Norm | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        super().__init__()
        self.model, self.source, self.method = model, source, method
        self.relu, self.add, self.average, self.ledger = relu, add, average, ledger
        self._names: dict[int, str] | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not torch.is_grad_enabled() or not args:
            return func(*args, **kwargs)
        if self.ledger is not None and self.ledger.watching and not _metadata(func):
            relu = func in _RELU or func in _RELU_INPLACE
            for tensor in _tensors(args, kwargs):
                self.ledger.use(tensor, relu)
        if func in _RELU or func in _RELU_INPLACE:
            x = args[0]
            if self._tracked(x) and (self.relu is None or self.relu.depth == 0):
                inplace = func in _RELU_INPLACE or kwargs.get("inplace") is True or args[1:2] == (True,)
                if self.relu is not None or (inplace and _augmented_or_assigned()):
                    return self._relu(x, inplace)
        elif self.add is not None:
            if func in _ADD or func in _SUB:
                tensors = args[:2]
                if len(tensors) == 2 and self._tracked(tensors[0]) and self._tracked(tensors[1]):
                    return self._sum(func, *tensors, kwargs.get("alpha", 1))
            elif func in _AVERAGE and self.average is not None and self._tracked(args[0]):
                module, name = self._enclosing()
                label = (
                    name if isinstance(module, AVERAGE_MODULES) else f"{name or 'model'} ({func.__name__})"
                )
                return self.average.bind(label, self.ledger).apply(func, *args, **kwargs)
            elif func in _PRODUCT:
                operands = [a for a in (args[1] if func is torch.einsum else args) if isinstance(a, Tensor)]
                if sum(self._tracked(a) for a in operands) >= 2:
                    raise UnsupportedModelError(
                        f"{self.method} cannot handle {self._where()}: it multiplies two activations "
                        f"({getattr(func, '__name__', func)}), e.g. gating or attention, "
                        "for which no LRP rule is defined"
                    )
        return func(*args, **kwargs)

    def _tracked(self, t: Any) -> bool:
        return isinstance(t, Tensor) and t.requires_grad and (t.grad_fn is not None or t is self.source)

    def _relu(self, x: Tensor, inplace: bool) -> Tensor:
        """An out-of-place ReLU (with the ReLU rule, if any): layer outputs carrying a rule must not be
        overwritten. An in-place ReLU whose result the program does not keep cannot be replaced."""
        if inplace and not _augmented_or_assigned():
            raise UnsupportedModelError(
                f"{self.method} cannot handle {self._where()}: an in-place ReLU whose result is not "
                "assigned; use nn.ReLU or x = F.relu(x)"
            )
        out = torch.relu(x)
        return out if self.relu is None else self.relu.apply(x, out)

    def _sum(self, func: Any, a: Tensor, b: Tensor, alpha: float) -> Tensor:
        if func in _INPLACE and not _augmented_or_assigned():
            raise UnsupportedModelError(
                f"{self.method} cannot handle {self._where()}: it merges two branches with an in-place "
                f"{func.__name__} statement; write out = out + identity or out += identity"
            )
        if func in _SUB:
            alpha = -alpha
        if func is Tensor.__radd__:
            a, b = b, a
        name = self._enclosing()[1]
        rule = self.add.bind(f"{name or 'model'} (+)", self.ledger)
        return rule.apply(a, b, alpha)

    def _enclosing(self) -> tuple[nn.Module | None, str | None]:
        """The innermost module of the model whose forward is running (from the Python call stack)."""
        if self._names is None:
            self._names = {id(m): n for n, m in self.model.named_modules()}
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in self._names:
                return owner, self._names[id(owner)]
            frame = frame.f_back
        return None, None

    def _where(self) -> str:
        module, name = self._enclosing()
        if module is None:
            return "an operation in the model's forward"
        return f"the module {type(module).__name__} ({repr(name) if name else 'the model itself'})"


_METADATA = {
    Tensor.dim,
    Tensor.size,
    Tensor.numel,
    Tensor.stride,
    Tensor.detach,
    Tensor.is_contiguous,
    Tensor.is_floating_point,
    Tensor.data_ptr,
    Tensor.element_size,
}


def _metadata(func: Any) -> bool:
    """Operations that only read a tensor's metadata, or cut it from the graph: no relevance flows there."""
    return func in _METADATA or getattr(func, "__name__", "") == "__get__"


def _tensors(args: tuple, kwargs: dict) -> Iterator[Tensor]:
    """Every tensor among the arguments of an operation, also inside lists and tuples (``torch.cat``)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(tuple(value), {})


def inplace_error(method: str, error: RuntimeError) -> UnsupportedModelError | None:
    """The UnsupportedModelError for autograd's complaint about an in-place change of a rule's output."""
    text = str(error)
    if "inplace" not in text and "in-place" not in text:
        return None
    return UnsupportedModelError(
        f"{method}: the model modifies a layer output in place after a rule was applied to it; rewrite that "
        f"operation out of place ({text.splitlines()[0]})"
    )


def _augmented_or_assigned() -> bool:
    """True when the in-place tensor op being intercepted is ``a += b`` or its result is stored (``x =
    f(x)``).

    Then returning a new tensor instead of modifying ``a`` keeps the program's meaning, and the rule can own
    the backward. The calling frame is the first one outside torch and this module.
    """
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == _THIS_FILE
    ):
        frame = frame.f_back
    if frame is None:
        return False
    code = frame.f_code.co_code
    offset = frame.f_lasti
    op = dis.opname[code[offset]]
    if op in ("BINARY_OP", "INPLACE_ADD", "INPLACE_SUBTRACT"):
        return True
    # a call whose result is stored or returned: skip the call's trailing CACHE entries
    offset += 2
    while offset < len(code) and dis.opname[code[offset]] in ("CACHE", "EXTENDED_ARG"):
        offset += 2
    return offset < len(code) and dis.opname[code[offset]] in (
        "STORE_FAST",
        "STORE_NAME",
        "STORE_DEREF",
        "STORE_GLOBAL",
        "STORE_ATTR",
        "RETURN_VALUE",
        "STORE_SUBSCR",
    )
