"""LRP rules for the operations of transformers and modern convnets (AttnLRP, Achtibat et al. ICML 2024).

They attach to functional calls through :mod:`.intercept` (by way of :class:`.canonizers.FunctionalRules`), so
they reach torchvision's ``MultiheadAttention`` (which calls ``F.multi_head_attention_forward``), timm's
``Attention`` (fused ``F.scaled_dot_product_attention`` or explicit ``q @ kᵀ``, softmax, ``A @ v``), LayerNorm
(``nn.LayerNorm``, ConvNeXt's ``LayerNorm2d``), squeeze-excitation gates and layer scales. The signal is
relevance, as everywhere in the LRP driver (:mod:`.lrp`).

=============================  ================================================================================
operation                      rule
=============================  ================================================================================
``F.linear`` outside a         ε: R_x = x ⊙ Wᵀ(R / (z + ε sign z)) (attention's in/out projections)
``nn.Linear``
LayerNorm / ``F.layer_norm``   the standard deviation is a constant (identity rule on 1/σ), ε on the mean
                               subtraction and the affine map: R_x = x ⊙ Jᵀ(R / z) with J the Jacobian at σ fixed
GELU, SiLU, Hardswish, …       identity: relevance passes unchanged
softmax                        R_x = x ⊙ (R − s ⊙ Σ R) (AttnLRP Prop. 3.1; under CP-LRP no relevance
                               reaches an attention softmax, so it acts on a softmax elsewhere, e.g. a head)
``A @ V``, A attention         CP-LRP (default): A is a constant, R_V = V ⊙ Aᵀ(R / O);
                               ``attention='attnlrp'``: the matmul rule below
other ``A @ B``                R_A = A ⊙ ((R / 2O) Bᵀ), R_B = B ⊙ (Aᵀ (R / 2O)) (AttnLRP's uniform bilinear rule)
``a * g``, g broadcast         signal-take-all (Arras et al. 2017): the gate g is a constant, R_a = R summed to
(SE gate, smaller operand)     a's shape; g gets nothing (:mod:`.gating`, shared with DLBacktrace)
``a * b``, same shape          uniform: R_a = R_b = R / 2 (AttnLRP, elementwise products)
``a * c``, ``a / c``,          identity: R_a = R summed to a's shape (a scaling conserves relevance)
c constant
=============================  ================================================================================

CP-LRP (the attention weights treated as constants) is the default because it is cheaper (no relevance is sent
through the query/key path) and the AttnLRP authors report it gives maps of
similar faithfulness, often cleaner; ``attention='attnlrp'`` gives the full rule set. Stochastic depth and
dropout are identities in eval mode.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MethodError, UnsupportedModelError
from .gating import gate_multiply, gate_operands
from .intercept import OpCall
from .rules import Ledger, Norm, PassThrough, divide, stabilize

ATTENTION_RULES = ("cp", "attnlrp")

_LINEAR = {F.linear}
_LAYER_NORM = {F.layer_norm}
_IDENTITY = {
    F.gelu,
    F.silu,
    F.hardswish,
    F.mish,
    F.elu,
    F.selu,
    F.celu,
    F.softplus,
    F.leaky_relu,
    torch.tanh,
    Tensor.tanh,
    torch.sigmoid,
    Tensor.sigmoid,
    F.sigmoid,
    F.hardsigmoid,
}
_SOFTMAX = {F.softmax, torch.softmax, Tensor.softmax}
_MATMUL = {torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm, Tensor.bmm}
_MUL = {torch.mul, Tensor.mul, Tensor.mul_, Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__}
_DIV = {torch.div, Tensor.div, Tensor.div_, Tensor.__truediv__, Tensor.__itruediv__}
_UNSUPPORTED_PRODUCTS = {Tensor.__rtruediv__, torch.einsum, torch.baddbmm}
_ELEMENTWISE_MODULES = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh)
# identities in eval mode or reshapes, by class name (torchvision's StochasticDepth, Permute and MaxViT's window
# partitions, timm's DropPath and LayerScale), whose work, if any, is in functional calls the handlers see
IDENTITY_MODULE_NAMES = (
    "StochasticDepth",
    "DropPath",
    "Permute",
    "LayerScale",
    "LayerScale2d",
    "WindowPartition",
    "WindowDepartition",
    "SwapAxes",
)


class _Bilinear(torch.autograd.Function):
    """O = A @ B with R_A = A ⊙ ((R / 2O) Bᵀ), R_B = B ⊙ (Aᵀ (R / 2O)) (AttnLRP, matrix products)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, epsilon: float, rule: TransformerRules) -> Tensor:
        out = torch.matmul(a, b)
        ctx.epsilon, ctx.rule = epsilon, rule
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, Tensor, None, None]:
        a, b, out = ctx.saved_tensors
        s = divide(relevance, 2 * stabilize(out, ctx.epsilon))
        ra = (a * torch.matmul(s, b.transpose(-2, -1))).sum_to_size(a.shape)
        rb = (b * torch.matmul(a.transpose(-2, -1), s)).sum_to_size(b.shape)
        return ra, rb, None, None


class _Softmax(torch.autograd.Function):
    """s = softmax(x) with R_x = x ⊙ (R − s ⊙ Σ R) (AttnLRP Prop. 3.1)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:
        out = torch.softmax(x, dim)
        ctx.dim = dim
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        x, s = ctx.saved_tensors
        return x * (relevance - s * relevance.sum(ctx.dim, keepdim=True)), None


class TransformerRules:
    """The handlers of the table above, for one LRP pass.

    Args:
        epsilon: ε of the linear, LayerNorm and matrix-product rules.
        attention: ``'cp'`` (attention weights constant) or ``'attnlrp'``.
        tracked: tells whether a tensor carries the forward's graph (an activation, not a parameter).
        ledger: where the rules report the relevance at their inputs.
        method: the method's name, for error messages.
    """

    def __init__(
        self,
        epsilon: float,
        attention: str,
        tracked: Callable[[Any], bool],
        ledger: Ledger | None,
        method: str,
    ) -> None:
        if attention not in ATTENTION_RULES:
            raise MethodError(f"attention must be one of {', '.join(ATTENTION_RULES)}, got {attention!r}")
        self.epsilon, self.attention, self.tracked, self.ledger, self.method = (
            epsilon,
            attention,
            tracked,
            ledger,
            method,
        )
        self._attention: dict[int, Tensor] = {}

    def handlers(self) -> dict[Any, Callable[[OpCall], Any]]:
        table: dict[Any, Callable[[OpCall], Any]] = {}
        table.update(dict.fromkeys(_LINEAR, self._linear))
        table.update(dict.fromkeys(_LAYER_NORM, self._layer_norm))
        table.update(dict.fromkeys(_IDENTITY, self._identity))
        table.update(dict.fromkeys(_SOFTMAX, self._softmax))
        table.update(dict.fromkeys(_MATMUL, self._matmul))
        table.update(dict.fromkeys(_MUL | _DIV, self._product))
        table.update(dict.fromkeys(_UNSUPPORTED_PRODUCTS, self._unsupported))
        table[F.scaled_dot_product_attention] = self._sdpa
        table[F.multi_head_attention_forward] = self._mha
        return table

    # ------------------------------------------------------------------------------------------ rules
    def _norm(self, label: str) -> Norm:
        return Norm(epsilon=self.epsilon).bind(label, self.ledger)

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None, label: str) -> Tensor:
        """F.linear with the ε rule (bias in the denominator, as for nn.Linear)."""
        if not self.tracked(x):
            return F.linear(x, weight, bias)
        return self._norm(label).apply(F.linear, x, weight.detach(), None if bias is None else bias.detach())

    def softmax(self, x: Tensor, dim: int) -> Tensor:
        out = _Softmax.apply(x, dim) if self.tracked(x) else torch.softmax(x, dim)
        self._attention[id(out)] = out
        return out

    def matmul(self, a: Tensor, b: Tensor, label: str) -> Tensor:
        """A @ B: CP-LRP when A is an attention matrix (softmax output) and the rule is 'cp', else bilinear."""
        ta, tb = self.tracked(a), self.tracked(b)
        if ta and tb:
            hit = self._attention.get(id(a))
            if self.attention == "cp" and hit is not None and hit is a:
                constant = a.detach()
                return self._norm(label).apply(lambda v: torch.matmul(constant, v), b)
            return _Bilinear.apply(a, b, self.epsilon, self)
        if ta or tb:
            x, other = (a, b) if ta else (b, a)
            constant = other.detach()
            op = (lambda v: torch.matmul(v, constant)) if ta else (lambda v: torch.matmul(constant, v))
            return self._norm(label).apply(op, x)
        return torch.matmul(a, b)

    # --------------------------------------------------------------------------------------- handlers
    def _linear(self, call: OpCall) -> Any:
        if isinstance(call.module, nn.Linear) or not self.tracked(call.args[0]):
            return NotImplemented
        bound = _bind(F.linear, call)
        return self.linear(
            bound["input"], bound["weight"], bound.get("bias"), f"{call.name or 'model'} (linear)"
        )

    def _layer_norm(self, call: OpCall) -> Any:
        bound = _bind(F.layer_norm, call)
        x = bound["input"]
        if not self.tracked(x):
            return NotImplemented
        dims = tuple(range(-len(tuple(bound["normalized_shape"])), 0))
        weight, bias, eps = bound.get("weight"), bound.get("bias"), bound.get("eps", 1e-5)
        std = (x.detach().var(dims, unbiased=False, keepdim=True) + eps).sqrt()

        def normalize(v: Tensor) -> Tensor:
            y = (v - v.mean(dims, keepdim=True)) / std
            if weight is not None:
                y = y * weight.detach()
            return y if bias is None else y + bias.detach()

        return call.finish(self._norm(f"{call.name or 'model'} (layer_norm)").apply(normalize, x))

    def _identity(self, call: OpCall) -> Any:
        x = call.args[0] if call.args else None
        if not self.tracked(x):
            return NotImplemented
        out = call.run()
        if out.shape != x.shape:
            return NotImplemented
        return call.finish(PassThrough.apply(x, out.detach()))

    def _softmax(self, call: OpCall) -> Any:
        x = call.args[0]
        if not self.tracked(x):
            return NotImplemented
        dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else None)
        if dim is None:
            raise UnsupportedModelError(f"{self.method} cannot handle {call.where()}: a softmax without dim")
        dtype = call.kwargs.get("dtype")
        return self.softmax(x if dtype is None else x.to(dtype), dim)

    def _matmul(self, call: OpCall) -> Any:
        a, b = call.args[:2]
        if not (self.tracked(a) or self.tracked(b)):
            return NotImplemented
        return self.matmul(a, b, f"{call.name or 'model'} (matmul)")

    def _product(self, call: OpCall) -> Any:
        a, b = (*call.args, None, None)[:2]
        ta, tb = self.tracked(a), self.tracked(b)
        if not (ta or tb):
            return NotImplemented
        if ta and tb:
            if call.func in _DIV:
                raise UnsupportedModelError(
                    f"{self.method} cannot handle {call.where()}: it divides two activations, for which no "
                    "LRP rule is defined"
                )
            pair = gate_operands(a, b)  # a broadcast gate (squeeze-excitation): signal-take-all
            if pair is not None:
                return call.finish(gate_multiply(*pair, share=0.0))
            return call.finish(gate_multiply(a, b, share=0.5))
        return call.finish(PassThrough.apply(a if ta else b, call.run().detach()))

    def _unsupported(self, call: OpCall) -> Any:
        operands = call.args[1] if call.func is torch.einsum else call.args
        if sum(self.tracked(a) for a in operands if isinstance(a, Tensor)) < 2:
            return NotImplemented
        raise UnsupportedModelError(
            f"{self.method} cannot handle {call.where()}: it combines two activations with "
            f"{getattr(call.func, '__name__', call.func)}, for which no LRP rule is defined"
        )

    def _sdpa(self, call: OpCall) -> Any:
        """Fused attention, unfused: softmax(q kᵀ · scale + mask) @ v with the rules above."""
        bound = _bind(F.scaled_dot_product_attention, call)
        q, k, v = bound["query"], bound["key"], bound["value"]
        if not any(self.tracked(t) for t in (q, k, v)):
            return NotImplemented
        if bound.get("is_causal") or bound.get("enable_gqa"):
            raise UnsupportedModelError(
                f"{self.method} cannot handle {call.where()}: causal or grouped-query attention"
            )
        scale = bound.get("scale") or q.shape[-1] ** -0.5
        label = call.name or "model"
        scores = self.matmul(q * scale, k.transpose(-2, -1), f"{label} (q·k)")
        mask = bound.get("attn_mask")
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        return self.matmul(self.softmax(scores, -1), v, f"{label} (attention·v)")

    def _mha(self, call: OpCall) -> Any:
        """torchvision/torch ``MultiheadAttention``'s functional forward, with the rules above."""
        p = _bind(F.multi_head_attention_forward, call)
        query, key, value = p["query"], p["key"], p["value"]
        if not any(self.tracked(t) for t in (query, key, value)):
            return NotImplemented
        unsupported = [
            name
            for name in ("bias_k", "bias_v", "key_padding_mask", "attn_mask", "static_k", "static_v")
            if p.get(name) is not None
        ] + [name for name in ("add_zero_attn", "use_separate_proj_weight", "is_causal") if p.get(name)]
        if unsupported or query.dim() != 3:
            raise UnsupportedModelError(
                f"{self.method} cannot handle {call.where()}: multi-head attention with "
                f"{', '.join(unsupported) or 'unbatched input'} has no LRP rule here"
            )
        label = call.name or "model"
        length, batch, embed = query.shape
        heads = p["num_heads"]
        w, b = p["in_proj_weight"], p["in_proj_bias"]
        wq, wk, wv = w.chunk(3)
        bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
        q = self.linear(query, wq, bq, f"{label} (q)")
        k = self.linear(key, wk, bk, f"{label} (k)")
        v = self.linear(value, wv, bv, f"{label} (v)")
        head = embed // heads

        def split(t: Tensor) -> Tensor:
            return t.reshape(t.shape[0], batch * heads, head).transpose(0, 1)

        q, k, v = split(q), split(k), split(v)
        scores = self.matmul(q * head**-0.5, k.transpose(-2, -1), f"{label} (q·k)")
        attention = self.softmax(scores, -1)
        out = self.matmul(attention, v, f"{label} (attention·v)")
        out = out.transpose(0, 1).reshape(length, batch, embed)
        out = self.linear(out, p["out_proj_weight"], p["out_proj_bias"], f"{label} (out)")
        weights = None
        if p.get("need_weights", True):
            weights = attention.detach().view(batch, heads, length, -1)
            if p.get("average_attn_weights", True):
                weights = weights.mean(1)
        return out, weights


def _bind(func: Any, call: OpCall) -> dict[str, Any]:
    """The call's arguments by parameter name, with the defaults filled in."""
    bound = _signature(func).bind(*call.args, **call.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _builtin(*names: str, **defaults: Any) -> inspect.Signature:
    """A signature for a builtin function, which ``inspect`` cannot read."""
    positional = [
        inspect.Parameter(
            n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(n, inspect.Parameter.empty)
        )
        for n in names
    ]
    return inspect.Signature(positional)


_BUILTIN_SIGNATURES = {
    F.linear: _builtin("input", "weight", "bias", bias=None),
    F.scaled_dot_product_attention: _builtin(
        "query",
        "key",
        "value",
        "attn_mask",
        "dropout_p",
        "is_causal",
        "scale",
        "enable_gqa",
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        scale=None,
        enable_gqa=False,
    ),
}


@functools.cache
def _signature(func: Any) -> inspect.Signature:
    return _BUILTIN_SIGNATURES.get(func) or inspect.signature(func)


def identity_module(module: nn.Module) -> bool:
    """Modules that are identities in eval mode or whose work the functional rules see (by class name)."""
    return type(module).__name__ in IDENTITY_MODULE_NAMES


def elementwise_module(module: nn.Module) -> bool:
    return isinstance(module, _ELEMENTWISE_MODULES)
