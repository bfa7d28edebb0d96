"""Canonizers: temporary fixes to the computation so that the rules apply where the model is not one module
per operation. They act during one forward only and never touch the user's model: no parameter, flag or
attribute is written (in-place ReLUs are made out-of-place by :meth:`ModelAdapter.no_inplace`, which
``adapter.rules`` enters and restores).

- :class:`MergeBatchNorm` folds a BatchNorm into the conv/linear layer whose output it normalises, so the LRP
  rule of that layer sees the affine map W' = diag(a) W, b' = a(b − μ) + β (zennit's ``MergeBatchNorm`` does
  the same by overwriting the parameters for the duration; here the folded map is formed from the parameters
  at forward time, which also works inside ``functional_call``).
- :class:`FunctionalRules` applies rules to operations that are not modules (through :mod:`.intercept`):
  the residual ``out += identity`` of torchvision's BasicBlock/Bottleneck (and any add of two branches) goes
  through the proportional :class:`~.rules.Sum` rule, so relevance is conserved through ResNets; an added
  constant (a ViT's position embedding) is treated as a bias and keeps its share; averaging
  (``F.avg_pool2d``/``adaptive_avg_pool2d``, also inside the pooling modules, ``x.mean``, ``x.sum``,
  ``F.interpolate``) gets the proportional :class:`~.rules.Norm` rule; ``F.relu`` calls outside an ``nn.ReLU``
  get the ReLU rule of modified backprop; a product of two activations (gating, attention), for which no
  rule is defined, raises UnsupportedModelError naming the module. This is zennit's ResNet canonizer (which
  swaps the block's ``forward`` for one that calls a ``Sum`` module) without rewriting any block, so it covers
  any architecture that adds branches with ``+``/``+=``. It is built on :mod:`.intercept`, the package's one
  mechanism for operations that are not modules, which also handles in-place calls (DenseNet's
  ``F.relu(x, inplace=True)``, ResNet's ``out += identity``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .intercept import ModuleStack, OpCall, OpRules, tensors
from .rules import Affine, Ledger, LinearRule, Norm, ReLURule, Rule, Sum
from .transformer_rules import TransformerRules

_RELU = {F.relu, torch.relu, Tensor.relu}
_RELU_INPLACE = {F.relu_, torch.relu_, Tensor.relu_}
_ADD = {torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__}
_SUB = {torch.sub, Tensor.sub, Tensor.sub_, Tensor.__sub__, Tensor.__isub__, torch.subtract, Tensor.subtract}
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


class FunctionalRules:
    """Apply rules to tensor operations made outside modules, during one forward (see the module docstring).

    A context manager entered after ``adapter.rules(...)``: it stacks a :class:`~.intercept.ModuleStack` (which
    module runs) and an :class:`~.intercept.OpRules` mode with the handlers below.

    Args:
        model: the model being explained (to name the module where an unsupported operation happens).
        source: the input tensor of this forward (a leaf that requires grad).
        method: the method's name, for error messages.
        relu: the ReLU rule (modified backprop's, or LRP's pass-through) applied to functional ReLU calls made
            outside ``nn.ReLU`` modules (those carry the rule as a module hook).
        add: the rule for adds/subtractions of two activations (LRP); with it, products of two activations
            raise UnsupportedModelError.
        average: the rule for averaging operations (LRP): average pooling (module or functional), mean, sum,
            interpolation.
        ledger: where the adds and averages report their relevance.
        attention: with LRP, the attention rule of :mod:`.transformer_rules` (``'cp'`` or ``'attnlrp'``); its
            handlers then cover linear maps outside modules, LayerNorm, softmax, matrix and elementwise products
            and elementwise activations, with ``epsilon`` as their ε.
        unsupported: ``(functions, reason)``: a call of one of these functions on an activation raises
            UnsupportedModelError with ``reason`` (modified backprop on GELU/SiLU networks).
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
        unsupported: tuple[Iterable[Any], str] | None = None,
        attention: str | None = None,
        epsilon: float = 1e-6,
    ) -> None:
        self.model, self.source, self.method = model, source, method
        self.relu, self.add, self.average, self.ledger = relu, add, average, ledger
        handlers: dict[Any, Any] = dict.fromkeys(_RELU | _RELU_INPLACE, self._relu)
        if add is not None:
            handlers.update(dict.fromkeys(_ADD | _SUB, self._sum))
            handlers.update(dict.fromkeys(_PRODUCT, self._product))
        if average is not None:
            handlers.update(dict.fromkeys(_AVERAGE, self._average))
        if attention is not None:
            rules = TransformerRules(epsilon, attention, self._tracked, ledger, method)
            handlers.update(rules.handlers())
        self._reason = ""
        if unsupported is not None:
            functions, self._reason = unsupported
            handlers.update(dict.fromkeys(functions, self._unsupported))
        self._handlers = handlers
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> FunctionalRules:
        with contextlib.ExitStack() as stack:
            modules = stack.enter_context(ModuleStack(self.model))
            observe = self._observe if self.ledger is not None else None
            stack.enter_context(OpRules(self._handlers, stack=modules, observe=observe))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(*exc)

    def _observe(self, func: Any, args: tuple, kwargs: dict) -> None:
        if self.ledger.watching:
            relu = func in _RELU or func in _RELU_INPLACE
            for tensor in tensors(args, kwargs):
                self.ledger.use(tensor, relu)

    def _tracked(self, t: Any) -> bool:
        return isinstance(t, Tensor) and t.requires_grad and (t.grad_fn is not None or t is self.source)

    def _relu(self, call: OpCall) -> Any:
        """An out-of-place ReLU with the ReLU rule; the ``F.relu`` inside an ``nn.ReLU`` is the module's."""
        x = call.args[0]
        if not self._tracked(x) or isinstance(call.module, nn.ReLU):
            return NotImplemented
        out = torch.relu(x)
        return call.finish(out if self.relu is None else self.relu.apply(x, out))

    def _sum(self, call: OpCall) -> Any:
        a, b = (*call.args, None, None)[:2]
        alpha = call.kwargs.get("alpha", 1)
        if call.func in _SUB:
            alpha = -alpha
        if self._tracked(a) and self._tracked(b):
            if call.func is Tensor.__radd__:
                a, b = b, a
            rule = self.add.bind(f"{call.name or 'model'} (+)", self.ledger)
            return call.finish(rule.apply(a, b, alpha))
        if self._tracked(a) and isinstance(b, (Tensor, int, float)) and self.average is not None:
            # an activation plus a constant (a position embedding, a shift): the constant is a bias and keeps
            # its share, R_a = a ⊙ R / (a + c), as the bias of an affine layer does
            constant = b.detach() if isinstance(b, Tensor) else b
            rule = self.average.bind(f"{call.name or 'model'} (+ constant)", self.ledger)
            return call.finish(rule.apply(lambda t: t + alpha * constant, a))
        return NotImplemented

    def _average(self, call: OpCall) -> Any:
        if not self._tracked(call.args[0]):
            return NotImplemented
        name = call.name
        if isinstance(call.module, AVERAGE_MODULES):
            label = name
        else:
            label = f"{name or 'model'} ({call.func.__name__})"
        rule = self.average.bind(label, self.ledger)
        return call.finish(rule.apply(call.func, *call.args, **call.kwargs))

    def _product(self, call: OpCall) -> Any:
        args = call.args[1] if call.func is torch.einsum else call.args
        operands = [a for a in args if isinstance(a, Tensor)]
        if sum(self._tracked(a) for a in operands) >= 2:
            raise UnsupportedModelError(
                f"{self.method} cannot handle {call.where()}: it multiplies two activations "
                f"({getattr(call.func, '__name__', call.func)}), e.g. gating or attention, "
                "for which no LRP rule is defined"
            )
        return NotImplemented

    def _unsupported(self, call: OpCall) -> Any:
        if not call.args or not self._tracked(call.args[0]):
            return NotImplemented
        raise UnsupportedModelError(
            f"{self.method} cannot handle {call.where()}: it applies "
            f"{getattr(call.func, '__name__', call.func)}; {self._reason}"
        )


def inplace_error(method: str, error: RuntimeError) -> UnsupportedModelError | None:
    """The UnsupportedModelError for autograd's complaint about an in-place change of a rule's output."""
    text = str(error)
    if "inplace" not in text and "in-place" not in text:
        return None
    return UnsupportedModelError(
        f"{method}: the model modifies a layer output in place after a rule was applied to it; rewrite that "
        f"operation out of place ({text.splitlines()[0]})"
    )
