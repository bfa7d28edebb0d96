"""Backward rules: what happens at one module during a modified backward pass.

A rule is a small object that :meth:`ModelAdapter.rules` installs on one module. Its ``forward_hook`` returns
the module's output wrapped in a custom ``torch.autograd.Function`` whose forward is the identity and whose
backward maps the signal arriving at the output to the modified signal at the module's input, bypassing the
module's own derivative. The forward values are never changed.

Two families live here:

- ReLU rules for modified backprop (Guided Backprop, Deconvnet, RectGrad); the signal is a gradient. LRP's
  ReLU rule (:class:`PassReLU`) shares their machinery.
- LRP rules (Bach et al. 2015; Montavon et al. 2017, 2019); the signal *is* relevance, as in zennit: for an
  affine layer z = Wx + b the rules have the form R_in = x ⊙ ∂(ρ-modified z)ᵀ (R_out / stabilised z). They
  read the forward's own z, so ε needs one transposed convolution per layer and no extra forward; rules with
  modified weights (z⁺, αβ, γ, zᴮ, w²) add the forwards those weights need, in the backward.

Where each rule goes is decided in :mod:`.composites`; temporary graph fixes (BatchNorm folding, residual
adds, functional ReLUs) live in :mod:`.canonizers`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from ..errors import MethodError, UnsupportedModelError
from . import packed_conv

Bound = float | Tensor | None


GUARD = 1e-6


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """z + ε·sign(z) with sign(0) = +1: the denominator of the LRP-ε rule (zennit's convention; ε absolute)."""
    return z.abs().add_(epsilon).copysign_(z)


def divide(r: Tensor, d: Tensor, guard: float = GUARD) -> Tensor:
    """r / d with d kept away from zero, per sample and relative to its own scale: every |d| is raised to at
    least ``guard`` × the RMS of that sample's denominators, its sign kept (sign(0) = +1), and a sample whose
    denominators are all zero gets 0 (0/0 = 0).

    This only guards the division; unlike an absolute floor (the 1e-6 zennit adds) it never dominates the
    denominators of a model with small activations (random-weight GoogLeNet: |z| ≈ 1e-15), so LRP-0 stays
    gradient × input and conservation holds at any scale. It is zennit's ``Stabilizer(guard, clip=True,
    norm_scale=True)`` with 0/0 defined.
    """
    n = d.shape[0]
    size = d[0].numel()
    if size == 0:
        return r / d
    wide = torch.float32 if d.dtype in (torch.float16, torch.bfloat16) else None
    rms = torch.linalg.vector_norm(d.detach().reshape(n, -1), dim=1, dtype=wide)
    floor = torch.where(rms > 0, rms * (guard / size**0.5), float("inf")).to(d.dtype)
    out = torch.maximum(d.abs(), floor.view(n, *([1] * (d.ndim - 1)))).copysign_(d)
    return torch.div(r, out, out=out) if r.shape == out.shape and r.dtype == out.dtype else r / out


class Ledger:
    """What one LRP pass records.

    ``totals[name]`` is Σ R_in per sample at that layer's input; entries are created in forward order (so
    the dict reads from the input towards the output) and filled during the backward; a module called several
    times accumulates. For each rule output, :class:`~.canonizers.FunctionalRules` also counts the operations
    of the forward that used it and whether each was a ReLU (``watch``/``use``): an output used by exactly one
    ReLU receives relevance only where it is positive, which lets LRP-γ skip a test.
    """

    def __init__(self) -> None:
        self.totals: dict[str, Tensor | None] = {}
        self._outputs: dict[int, tuple[Tensor, list]] = {}

    def slot(self, name: str | None) -> None:
        if name is not None and name not in self.totals:
            self.totals[name] = None

    def add(self, name: str | None, *relevance: Tensor) -> None:
        if name is None:
            return
        total = None
        for r in relevance:
            part = r.detach().sum(tuple(range(1, r.ndim))) if r.ndim > 1 else r.detach()
            total = part if total is None else total + part
        previous = self.totals.get(name)
        self.totals[name] = total if previous is None else previous + total

    @property
    def watching(self) -> bool:
        return bool(self._outputs)

    def watch(self, output: Tensor) -> list:
        """Start counting the uses of ``output``; returns its [uses, all uses were ReLUs] cell."""
        cell = [0, True]
        self._outputs[id(output)] = (output, cell)
        return cell

    def close(self) -> None:
        """Stop watching (the forward is over). The watched outputs reference the graph whose backward
        nodes reference this ledger: a cycle through autograd that Python's collector cannot free, so it is
        cut here (the use counts stay with the layers)."""
        self._outputs.clear()

    def use(self, tensor: Tensor, relu: bool) -> None:
        hit = self._outputs.get(id(tensor))
        if hit is not None and hit[0] is tensor:
            hit[1][0] += 1
            hit[1][1] = hit[1][1] and relu


class Rule:
    """Base class. ``name`` and ``ledger`` are set by the composite so the backward can report relevance."""

    name: str | None = None
    ledger: Ledger | None = None

    def bind(self, name: str, ledger: Ledger | None) -> Rule:
        """A copy of this rule that reports to ``ledger`` under ``name`` (one instance per module)."""
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound.name, bound.ledger = name, ledger
        return bound

    def _record(self, *relevance: Tensor) -> None:
        if self.ledger is not None:
            self.ledger.add(self.name, *relevance)

    def _slot(self) -> None:
        if self.ledger is not None:
            self.ledger.slot(self.name)


# ----------------------------------------------------------------------------------------------- ReLU rules
class _ReLUBackward(torch.autograd.Function):
    """Identity on the ReLU's output; the backward is the rule's ``backward(a, g)`` with a = ReLU output."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, a: Tensor, rule: ReLURule) -> Tensor:
        ctx.rule = rule
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (a,) = ctx.saved_tensors
        return ctx.rule.backward(a, grad), None, None


class ReLURule(Rule, ABC):
    """Base of the modified-backprop ReLU rules: the forward is ReLU, the backward is :meth:`backward`.

    On ``nn.ReLU`` modules it is a forward hook; functional calls get it from
    :class:`~.canonizers.FunctionalRules`, which leaves the ``F.relu`` inside an ``nn.ReLU`` to the module's hook.
    """

    def forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        return self.apply(inputs[0], output)

    def apply(self, x: Tensor, a: Tensor) -> Tensor:
        """The ReLU output ``a`` of ``x``, with this rule's backward."""
        if not torch.is_grad_enabled() or not x.requires_grad:
            return a
        return _ReLUBackward.apply(x, a.detach(), self)

    @abstractmethod
    def backward(self, a: Tensor, grad: Tensor) -> Tensor:
        """The signal passed to the ReLU's input, from its output ``a`` and the incoming gradient ``grad``."""


class GuidedReLU(ReLURule):
    """Guided Backprop (Springenberg et al. 2015): g_in = 1[x > 0] · max(g_out, 0).

    The forward mask (the ReLU's own gradient) and the positive part of the incoming gradient.
    """

    def backward(self, a: Tensor, grad: Tensor) -> Tensor:
        return torch.ops.aten.threshold_backward(grad.clamp(min=0), a, 0.0)


class DeconvReLU(ReLURule):
    """Deconvnet (Zeiler and Fergus 2014): g_in = max(g_out, 0); the ReLU acts on the backward signal only."""

    def backward(self, a: Tensor, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class PassReLU(ReLURule):
    """LRP at a ReLU: relevance passes unchanged (zennit's ``Pass``). Every LRP rule gives 0 relevance to an
    inactive unit (R = x ⊙ …), so this equals the ReLU's gradient, minus its masking pass."""

    def backward(self, a: Tensor, grad: Tensor) -> Tensor:
        return grad


@dataclass
class RectifiedReLU(ReLURule):
    """RectGrad (Kim et al. 2019): g_in = 1[x > 0] · 1[a ⊙ g_out > τ] · g_out.

    τ is the ``q``-th percentile (nearest rank) of the importance scores a ⊙ g_out over the layer, per sample
    (:func:`percentile`), so only the units in the top (100 − q)% pass their gradient. q = 98 is the paper's
    setting.
    """

    q: float = 98.0

    def __post_init__(self) -> None:
        if not isinstance(self.q, (int, float)) or not 0.0 <= self.q < 100.0:
            raise MethodError(f"rectgrad's q is a percentile in [0, 100), got {self.q!r}")

    def backward(self, a: Tensor, grad: Tensor) -> Tensor:
        score = a * grad
        tau = percentile(score.flatten(1), self.q)
        if bool((tau < 0).any()):  # only then can a unit with a = 0 pass the threshold
            keep = (score > tau.view(-1, *([1] * (grad.ndim - 1)))) & (a > 0)
            return torch.where(keep, grad, 0.0)
        # g where score > τ, per sample, in one fused pass (the kernel of ReLU's own backward)
        out = torch.empty_like(grad)
        for i, t in enumerate(tau.tolist()):
            torch.ops.aten.threshold_backward.grad_input(grad[i], score[i], t, grad_input=out[i])
        return out


_SAMPLE = 16384


def percentile(values: Tensor, q: float) -> Tensor:
    """Nearest-rank q-th percentile of each row of an N×M tensor: the k-th smallest value with
    k = round(q/100·(M−1)) + 1.

    Exact for rows of up to 16384 values. A longer row uses the same order statistic of a fixed pseudo-random
    sample of 16384 of its values, whose rank in the row is off by about √(p(1−p)/16384)·M (p = 0.98: 0.1% of
    M, so 2% ± 0.1% of the units pass RectGrad's threshold). It costs no pass over the row; an exact selection
    over a layer costs as much as the rest of RectGrad's backward together.
    """
    n, m = values.shape
    if m > _SAMPLE:
        generator = torch.Generator(device=values.device).manual_seed(m)
        values = values[:, torch.randint(m, (_SAMPLE,), generator=generator, device=values.device)]
        m = _SAMPLE
    k = min(m, int(round(q / 100.0 * (m - 1))) + 1)
    return values.kthvalue(k, dim=1).values


# ------------------------------------------------------------------------------------------ affine layers
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class Affine:
    """The affine map an LRP rule acts on: z = W x + b for a Linear or Conv{1,2,3}d, or z = a ⊙ x + c for a
    BatchNorm on its own (``elementwise``). A BatchNorm after a conv/linear is folded into it
    (:meth:`folded`):
    W' = diag(a) W, b' = a ⊙ (b − μ) + β with a = γ / √(σ² + eps).

    The rules use W', W'⁺ and W' + cW'⁺. They are formed from the parameters read at forward time (so
    substitutions made by ``torch.func.functional_call`` are honoured) and kept between calls by
    :func:`derived_weight` while the parameter and the folded scale are unchanged, so a repeated explanation
    does no weight-sized work.
    """

    module: nn.Module
    raw: Tensor
    bias: Tensor | None
    scale: Tensor | None = None
    elementwise: bool = False
    param: Tensor | None = None  # the weight parameter itself: the key of the derived weights
    usage: list | None = None  # [uses, all were ReLUs] of the output in the forward (see Ledger.watch)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, module: nn.Module) -> Affine:
        if isinstance(module, _BATCHNORM_TYPES):
            scale, shift = _batchnorm_affine(module)
            return cls(module, scale, shift, elementwise=True)
        if isinstance(module, (nn.Linear, *_CONV_TYPES)):
            bias = None if module.bias is None else module.bias.detach()
            return cls(module, module.weight.detach(), bias, param=module.weight)
        raise UnsupportedModelError(f"no affine LRP rule for {type(module).__name__}")

    def folded(self, norm: nn.Module) -> Affine:
        """This layer followed by the BatchNorm ``norm``, as one affine map."""
        scale, shift = _batchnorm_affine(norm)
        bias = shift if self.bias is None else shift + scale * self.bias
        if self.scale is not None:
            scale = scale * self.scale
        return Affine(self.module, self.raw, bias, scale, self.elementwise, self.param)

    @property
    def feeds_one_relu(self) -> bool:
        """True when the forward used this layer's output exactly once, in a ReLU: relevance then arrives
        only where the output is positive."""
        return self.usage is not None and self.usage[0] == 1 and self.usage[1]

    # ------------------------------------------------------------------------------------- weights
    def _derived(self, key: Any, make: Callable[[], Tensor]) -> Tensor:
        """``make()`` once per layer call (a rule asks for the same weight several times), and kept between
        calls by :func:`derived_weight` for a module's own parameter."""
        hit = self._cache.get(key)
        if hit is None:
            if self.param is None:
                with torch.no_grad():
                    hit = make()
            else:
                hit = derived_weight(self.param, key, make, self.scale)
            self._cache[key] = hit
        return hit

    @property
    def weight(self) -> Tensor:
        """W' (the weight with the folded BatchNorm scale)."""
        if self.scale is None:
            return self.raw
        shape = (-1,) + (1,) * (self.raw.ndim - 1)
        return self._derived("weight", lambda: self.raw * self.scale.view(shape))

    def positive(self) -> Tensor:
        """W'⁺."""
        return self._derived("positive", lambda: self.weight.clamp(min=0))

    def negative(self) -> Tensor:
        """W'⁻ = W' − W'⁺."""
        return self.weight - self.positive()

    def absolute(self) -> Tensor:
        """|W'|."""
        return self._derived("absolute", lambda: self.weight.abs())

    def minus(self) -> Tensor:
        """|W'⁻| = W'⁺ − W'."""
        return self._derived("minus", lambda: self.positive() - self.weight)

    def mixed(self, c: float) -> Tensor:
        """W' + c W'⁺."""
        return self._derived(("mixed", c), lambda: torch.add(self.weight, self.positive(), alpha=c))

    # ------------------------------------------------------------------------------------ products
    def linear(self, x: Tensor, weight: Tensor) -> Tensor:
        """W x (no bias) for any weight W of the module's shape."""
        if self.elementwise:
            return x * _channel(weight, x)
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight)
        geometry = packed_conv.of_module(self.module)
        out = None if geometry is None else packed_conv.conv(x, weight, **geometry)
        return self.module._conv_forward(x, weight, None) if out is None else out

    def transpose(self, s: Tensor, weight: Tensor, x: Tensor) -> Tensor:
        """(∂(W x)/∂x)ᵀ s for any weight W of the module's shape: one transposed convolution (or matmul)."""
        if self.elementwise:
            return s * _channel(weight, s)
        if isinstance(self.module, nn.Linear):
            return s @ weight
        conv = self.module
        if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
            if _subpixel(conv, weight):
                return subpixel_transpose(s, weight, conv.stride[0], conv.padding, x.shape[-2:])
            geometry = packed_conv.of_module(conv)
            out = None if geometry is None else packed_conv.conv_transpose(s, weight, x.shape[2:], **geometry)
            if out is not None:
                return out
            dims = weight.ndim - 2
            return torch.ops.aten.convolution_backward(
                s,
                x,
                weight,
                None,
                conv.stride,
                conv.padding,
                conv.dilation,
                False,
                [0] * dims,
                conv.groups,
                (True, False, False),
            )[0]
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            return torch.autograd.grad(conv._conv_forward(leaf, weight, None), leaf, s)[0]

    def _concatenable(self) -> bool:
        return not self.elementwise and getattr(self.module, "groups", 1) == 1

    def linear_pair(self, x1: Tensor, w1: Tensor, x2: Tensor, w2: Tensor) -> Tensor:
        """W₁x₁ + W₂x₂ as one product over the concatenated input channels."""
        if not self._concatenable():
            return self.linear(x1, w1) + self.linear(x2, w2)
        dim = x1.ndim - 1 if isinstance(self.module, nn.Linear) else 1
        return self.linear(torch.cat([x1, x2], dim), torch.cat([w1, w2], 1))

    def transpose_pair(self, s: Tensor, w1: Tensor, w2: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(W₁ᵀs, W₂ᵀs) from one transposed product with the weights concatenated along the input channels."""
        if not self._concatenable():
            return self.transpose(s, w1, x), self.transpose(s, w2, x)
        dim = x.ndim - 1 if isinstance(self.module, nn.Linear) else 1
        both = self.transpose(s, torch.cat([w1, w2], 1), torch.cat([x, x], dim))
        return both.chunk(2, dim)

    def transpose_sides(self, s: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(W'⁺ᵀs, |W'⁻|ᵀs) from one transposed product over [W'⁺, |W'⁻|] side by side along the input channels,
        a derived weight kept like the others (only the input's shape is read)."""
        if not self._concatenable():
            return self.transpose(s, self.positive(), x), self.transpose(s, self.minus(), x)
        dim = x.ndim - 1 if isinstance(self.module, nn.Linear) else 1
        sides = self._derived("sides", lambda: torch.cat([self.positive(), self.minus()], 1))
        shape = list(x.shape)
        shape[dim] *= 2
        return self.transpose(s, sides, x.new_empty(shape)).chunk(2, dim)

    def stacked(self, c: float) -> Tensor:
        """[W'; cW'⁺] stacked along the output channels (for :meth:`transpose_sum`)."""
        return self._derived(("stacked", c), lambda: torch.cat([self.weight, c * self.positive()], 0))

    def transpose_sum(self, s1: Tensor, s2: Tensor, c: float, x: Tensor) -> Tensor:
        """W'ᵀs₁ + cW'⁺ᵀs₂ as one transposed product over the stacked output channels."""
        if not self._concatenable():
            return torch.add(
                self.transpose(s1, self.weight, x), self.transpose(s2, self.positive(), x), alpha=c
            )
        dim = s1.ndim - 1 if isinstance(self.module, nn.Linear) else 1
        return self.transpose(torch.cat([s1, s2], dim), self.stacked(c), x)

    @property
    def narrow(self) -> bool:
        """True for a layer with at most 4 input channels per output (an image model's first layer)."""
        return not self.elementwise and self.raw.shape[1] * getattr(self.module, "groups", 1) <= 4

    def bias_as(self, z: Tensor, bias: Tensor | None = None) -> Tensor | float:
        """The (possibly modified) bias broadcast against an output ``z`` (0 when there is none)."""
        bias = self.bias if bias is None else bias
        if bias is None:
            return 0.0
        return bias if isinstance(self.module, nn.Linear) and not self.elementwise else _channel(bias, z)


def _subpixel(conv: nn.Module, weight: Tensor) -> bool:
    """Whether :func:`subpixel_transpose` serves this convolution: 2-D, strided, ungrouped, undilated, and with
    at most 4 input channels (an image layer), where oneDNN's transposed convolution is 2–3× slower on the CPU
    than the equivalent stride-1 one."""
    return (
        weight.ndim == 4
        and weight.shape[1] <= 4
        and conv.groups == 1
        and tuple(conv.dilation) == (1, 1)
        and conv.stride[0] == conv.stride[1] > 1
    )


_SUBPIXEL: WeakIdKeyDictionary = WeakIdKeyDictionary()


def subpixel_transpose(s: Tensor, weight: Tensor, stride: int, padding: tuple, size: tuple) -> Tensor:
    """(∂ conv(x, W, stride, padding)/∂x)ᵀ s for an input of spatial ``size``, as a stride-1 convolution.

    Input position q (padded coordinate q + p = stride·m + φ) receives Σ_j W[stride·j + φ] s[m − j]: for each
    phase φ a stride-1 convolution of s with the phase's taps of W, flipped. All stride² phases run as one
    convolution with stride²·C_in output channels (the taps padded to ⌈k/stride⌉), which a pixel shuffle
    interleaves back; this reads s once instead of scattering it.
    """
    out_channels, in_channels, kh, kw = weight.shape
    taps = -(-max(kh, kw) // stride)
    stamp = _stamp(weight)
    hit = _SUBPIXEL.get(weight)
    if hit is None or hit[0] != stamp:
        padded = F.pad(weight.detach(), (0, stride * taps - kw, 0, stride * taps - kh))
        phases = padded.view(out_channels, in_channels, taps, stride, taps, stride).permute(1, 3, 5, 0, 2, 4)
        hit = _SUBPIXEL[weight] = (
            stamp,
            phases.flip(4, 5).reshape(in_channels * stride * stride, out_channels, taps, taps).contiguous(),
        )
    full = F.pixel_shuffle(F.conv2d(s, hit[1], None, 1, taps - 1), stride)
    (pad_h, pad_w), (height, width) = padding, size
    short_h, short_w = pad_h + height - full.shape[2], pad_w + width - full.shape[3]
    if short_h > 0 or short_w > 0:  # positions no output reads: zero
        full = F.pad(full, (0, max(short_w, 0), 0, max(short_h, 0)))
    return full[:, :, pad_h : pad_h + height, pad_w : pad_w + width].contiguous()


_DERIVED: WeakIdKeyDictionary = WeakIdKeyDictionary()
_DERIVED_LIMIT = 1 << 24  # elements; larger derived weights (e.g. VGG's first dense layer) are not kept


def derived_weight(
    param: Tensor, key: Any, make: Callable[[], Tensor], scale: Tensor | None = None
) -> Tensor:
    """``make()``, a tensor derived from the weight ``param`` and the folded BatchNorm ``scale`` (W', W'⁺,
    W' + γW'⁺), kept while ``param`` lives and neither it (same storage and version) nor ``scale`` changes, so
    repeated explanations skip the weight-sized work.

    The parameter is referenced weakly, nothing is stored on the model, and :func:`clear_weight_cache` empties
    it. Derived weights of parameters over 2²⁴ elements (VGG's first dense layer) are not kept.
    """
    stamp = _stamp(param)
    entries = _DERIVED.get(param)
    hit = None if entries is None else entries.get(key)
    if hit is not None and hit[0] == stamp and _same(hit[1], scale):
        return hit[2]
    with torch.no_grad():
        value = make()
    if param.numel() <= _DERIVED_LIMIT:
        if entries is None:
            entries = _DERIVED[param] = {}
        entries[key] = (stamp, None if scale is None else scale.clone(), value)
        packed_conv.keep(value)
    return value


def _stamp(tensor: Tensor) -> tuple:
    """What changes when a tensor is modified in place or its storage replaced: the key of a cached derivative."""
    return (tensor._version, tensor.data_ptr(), tuple(tensor.shape), tensor.dtype, tensor.device)


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(torch.equal(a, b))


def clear_weight_cache() -> None:
    """Forget the derived weights kept by :func:`derived_weight`."""
    _DERIVED.clear()


def _channel(v: Tensor, like: Tensor) -> Tensor:
    """A per-channel vector shaped to broadcast over dim 1 of ``like``."""
    return v.view(1, -1, *([1] * (like.ndim - 2)))


def _batchnorm_affine(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """(a, c) with BatchNorm(x) = a ⊙ x + c in eval mode (running statistics)."""
    if norm.running_var is None or norm.running_mean is None:
        raise UnsupportedModelError(
            f"{type(norm).__name__} without running statistics normalises by its own input; "
            "no LRP rule for it"
        )
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.detach()
        shift = -norm.running_mean.detach() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.detach()
    return scale, shift


class _Relevance(torch.autograd.Function):
    """Identity on z; the backward returns the rule's R_in for the layer input x (the layer graph is
    bypassed)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, z: Tensor, rule: LinearRule, layer: Affine) -> Tensor:
        ctx.rule, ctx.layer = rule, layer
        ctx.save_for_backward(x, z)
        return z

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None, None, None]:
        x, z = ctx.saved_tensors
        with torch.no_grad():
            result = ctx.rule.relevance(ctx.layer, x, z, relevance)
        ctx.rule._record(result)
        return result, None, None, None


class LinearRule(Rule, ABC):
    """Base of the LRP rules for affine layers (Conv, Linear, and a BatchNorm folded into them)."""

    def forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        return self.attach(Affine.of(module), inputs[0], output)

    def attach(self, layer: Affine, x: Tensor, z: Tensor) -> Tensor:
        """``z`` (the layer output for input ``x``) with this rule as its backward."""
        if not torch.is_grad_enabled() or not x.requires_grad:
            return z
        self._slot()
        out = _Relevance.apply(x, z.detach(), self, layer)
        if self.ledger is not None:
            layer.usage = self.ledger.watch(out)
        return out

    @abstractmethod
    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        """R_in for the layer input ``x``, from the forward output ``z`` and the relevance ``r`` at the
        output."""


@dataclass
class Epsilon(LinearRule):
    """LRP-ε (Bach et al. 2015): R_in = x ⊙ Wᵀ (R_out / (z + ε·sign z)), z the forward output (bias included).

    ε is absolute, as in zennit (so |denominator| ≥ ε). ε = 0 is LRP-0 (gradient × input on ReLU networks),
    whose zero denominators :func:`divide` guards. Cost: one transposed convolution, the forward's z reused.
    """

    epsilon: float = 1e-6
    stabilizer: float = GUARD

    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        if self.epsilon > 0:
            s = stabilize(z, self.epsilon)
            s = torch.div(r, s, out=s)
        else:
            s = divide(r, z, self.stabilizer)
        return layer.transpose(s, layer.weight, x).mul_(x)


@dataclass
class AlphaBeta(LinearRule):
    """LRP-αβ (Bach et al. 2015), α − β = 1, in zennit's form that also handles negative inputs:

    z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺,  z⁻ = W⁻x⁺ + W⁺x⁻ + b⁻,
    R_in = α [x⁺ ⊙ W⁺ᵀ(R/z⁺) + x⁻ ⊙ W⁻ᵀ(R/z⁺)] − β [x⁺ ⊙ W⁻ᵀ(R/z⁻) + x⁻ ⊙ W⁺ᵀ(R/z⁻)].

    α = 1, β = 0 is the z⁺ rule (Montavon et al. 2017). With x ≥ 0 (after a ReLU) the x⁻ terms vanish and W⁻x
    is taken from the forward's z, so α1β0 costs one forward and one transposed convolution.
    """

    alpha: float = 1.0
    beta: float = 0.0
    stabilizer: float = GUARD

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise MethodError(f"LRP-αβ needs α, β ≥ 0 and α − β = 1, got α={self.alpha}, β={self.beta}")

    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        bias, eps = layer.bias, self.stabilizer
        bp = None if bias is None else bias.clamp(min=0)
        bn = None if bias is None else bias.clamp(max=0)
        if bool(x.amin() >= 0):
            plus = layer.linear(x, layer.positive())  # z⁺ = W⁺x + b⁺ ≥ 0
            if bp is not None:
                plus += layer.bias_as(z, bp)
            if self.beta == 0:
                return layer.transpose(divide(r, plus, eps), layer.positive(), x).mul_(x)
            sp = divide(r, plus, eps)
            sn = divide(r, z - plus, eps)  # z⁻ = W⁻x + b⁻ = z − z⁺ from the forward
            # α W⁺ᵀ sp − β W⁻ᵀ sn with W⁻ = W − W⁺
            return x * (
                layer.transpose(self.alpha * sp + self.beta * sn, layer.positive(), x)
                - self.beta * layer.transpose(sn, layer.weight, x)
            )
        wp, wn = layer.positive(), layer.negative()
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        sp = divide(r, layer.linear_pair(xp, wp, xn, wn) + layer.bias_as(z, bp), eps)
        tp, tn = layer.transpose_pair(sp, wp, wn, x)
        out = self.alpha * (xp * tp + xn * tn)
        if self.beta != 0:
            sn = divide(r, layer.linear_pair(xp, wn, xn, wp) + layer.bias_as(z, bn), eps)
            tp, tn = layer.transpose_pair(sn, wp, wn, x)
            out = out - self.beta * (xp * tn + xn * tp)
        return out


class ZPlus(AlphaBeta):
    """LRP-z⁺ (Montavon et al. 2017): R_in = x⁺ ⊙ W⁺ᵀ(R/z⁺) + x⁻ ⊙ W⁻ᵀ(R/z⁺), z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺ (= α1β0).

    For b ≤ 0 and x ≥ 0 this is deep Taylor's z⁺ rule, R_i = Σ_j x_i w⁺_ij / Σ_i' x_i' w⁺_i'j · R_j.
    """

    def __init__(self, stabilizer: float = GUARD) -> None:
        super().__init__(alpha=1.0, beta=0.0, stabilizer=stabilizer)


@dataclass
class Gamma(LinearRule):
    """LRP-γ (Montavon et al. 2019), generalised to signed inputs as in zennit (Andéol et al. 2021):

    with W_± = W + γW^±,
    z_+ = W_+ x⁺ + W_− x⁻ + b + γb⁺ (used where z > 0),  z_− = W_− x⁺ + W_+ x⁻ + b + γb⁻ (where z < 0),
    R_in = x⁺ ⊙ (W_+ᵀ s_+ + W_−ᵀ s_−) + x⁻ ⊙ (W_−ᵀ s_+ + W_+ᵀ s_−),  s_± = 1[z ≷ 0] R / z_±.

    For x ≥ 0 both z_± follow from the forward's z and one extra convolution p = W⁺x + b⁺, and
    R_in = x ⊙ [Wᵀ(s_+ + (1+γ)s_−) + γW⁺ᵀ(s_+ − s_−)]. Before a ReLU the relevance sits where z > 0 only,
    so s_− = 0 and R_in = x ⊙ (W + γW⁺)ᵀs_+: one forward and one transposed convolution (two before a
    residual add).
    """

    gamma: float = 0.25
    stabilizer: float = GUARD

    def __post_init__(self) -> None:
        if not isinstance(self.gamma, (int, float)) or self.gamma < 0:
            raise MethodError(f"LRP-γ needs γ ≥ 0, got {self.gamma!r}")

    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        g, eps = float(self.gamma), self.stabilizer
        bias = layer.bias
        bp = 0.0 if bias is None else layer.bias_as(z, bias.clamp(min=0))
        bn = 0.0 if bias is None else layer.bias_as(z, bias.clamp(max=0))
        if bool(x.amin() >= 0):
            p = layer.linear(x, layer.positive())
            if bias is not None:
                p += bp  # p = W'⁺x + b'⁺ ≥ 0
            positive = z > 0
            if layer.feeds_one_relu or not bool(r.masked_fill(positive, 0.0).any()):
                # the usual case before a ReLU: relevance only where z > 0, so s_− = 0, and there z_+ > 0
                z_pos = torch.add(z, p, alpha=g).clamp_(min=0)
                return layer.transpose(divide(r, z_pos, eps), layer.mixed(g), x).mul_(x)
            # z_± = z + γ(W'^±x + b'^±) on each side, with W'⁻x + b'⁻ = z − p from the forward; s = s_+ + s_−
            # (disjoint; both 0 where r = 0, which every rule above gives where z = 0) and v = s_+ − s_−
            s = divide(r, torch.add(z, torch.where(positive, p, z - p), alpha=g), eps)
            v = s * z.sign()
            u = torch.add(s, v, alpha=-g / (2 + g)).mul_(1 + g / 2)  # s_+ + (1 + γ) s_−
            return layer.transpose_sum(u, v, g, x).mul_(x)
        w_up = layer.mixed(g)
        w_down = layer.weight + g * layer.negative()
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        base = layer.bias_as(z)
        z_pos = layer.linear_pair(xp, w_up, xn, w_down) + base + g * bp
        z_neg = layer.linear_pair(xp, w_down, xn, w_up) + base + g * bn
        s_pos = torch.where(z > 0, divide(r, z_pos, eps), 0.0)
        s_neg = torch.where(z < 0, divide(r, z_neg, eps), 0.0)
        up_pos, down_pos = layer.transpose_pair(s_pos, w_up, w_down, x)
        up_neg, down_neg = layer.transpose_pair(s_neg, w_up, w_down, x)
        return xp * (up_pos + down_neg) + xn * (down_pos + up_neg)


@dataclass
class ZBox(LinearRule):
    """LRP-zᴮ (Montavon et al. 2017) for the first layer, for inputs bounded by l ≤ x ≤ h:

    z = Wx − W⁺l − W⁻h (the biases cancel),  R_in = x ⊙ Wᵀs − l ⊙ W⁺ᵀs − h ⊙ W⁻ᵀs,  s = R / z.

    ``low``/``high`` are numbers or tensors broadcastable to the input (per channel: 1×C×1×1); None takes each
    sample's own per-channel minimum/maximum (over all its values for an N×D input), so a map does not depend
    on the other images of its batch. The bounds are widened to contain the input.
    """

    low: Bound = None
    high: Bound = None
    stabilizer: float = GUARD

    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        low = _bound(self.low, x, torch.amin).minimum(x)
        high = _bound(self.high, x, torch.amax).maximum(x)
        weight, positive = layer.weight, layer.positive()
        # Wx − W⁺l − W⁻h = Wx − Wh + W⁺(h − l);  R_in = (x − h) ⊙ Wᵀs + (h − l) ⊙ W⁺ᵀs
        denominator = (z - layer.bias_as(z)) + layer.linear_pair(-high, weight, high - low, positive)
        s = divide(r, denominator, self.stabilizer)
        own, pos = layer.transpose_pair(s, weight, positive, x)
        return (x - high) * own + (high - low) * pos


def _bound(value: Bound, x: Tensor, reduce: Callable) -> Tensor:
    if value is None:
        dims = list(range(2, x.ndim)) if x.ndim > 2 else [1]
        return reduce(x, dim=dims, keepdim=True).expand_as(x)
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand_as(x)


@dataclass
class WSquare(LinearRule):
    """LRP-w² (Montavon et al. 2017) for a first layer with unbounded inputs: R_i = Σ_j w²_ij / Σ_i' w²_i'j
    · R_j.

    Relevance is spread by the squared weights, independent of the input; the bias is left out so the rule
    conserves relevance (zennit also squares the bias into the denominator).
    """

    stabilizer: float = GUARD

    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        square = layer.weight**2
        denominator = layer.linear(torch.ones_like(x), square)
        return layer.transpose(divide(r, denominator, self.stabilizer), square, x)


# --------------------------------------------------------------------------- parameter-free module rules
class PassThrough(torch.autograd.Function):
    """``out`` with the identity rule as its backward: the output's relevance goes to ``x`` unchanged, summed over
    the dimensions ``x`` was broadcast in (activations, scaling by a constant, gates' signals)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor) -> Tensor:
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        return relevance.sum_to_size(ctx.shape), None


class Pass(Rule):
    """LRP at an elementwise activation other than ReLU (ELU, GELU, SiLU, LeakyReLU, …): relevance passes
    through unchanged, as zennit's ``Pass`` (ReLUs get :class:`PassReLU`, which also covers functional calls).
    """

    def forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        x = inputs[0]
        if not torch.is_grad_enabled() or not x.requires_grad or output.shape != x.shape:
            return output
        return PassThrough.apply(x, output.detach())


class _TimesInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, rule: Norm) -> Tensor:
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        relevance = x * grad
        ctx.rule._record(relevance)
        return relevance, None


class _OverOutput(torch.autograd.Function):
    """Identity on z; the backward divides the relevance by z (+ ε sign z when ε > 0), guarded against zero."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, guard: float, epsilon: float = 0.0) -> Tensor:
        ctx.guard, ctx.epsilon = guard, epsilon
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None, None]:
        (z,) = ctx.saved_tensors
        if ctx.epsilon:
            z = stabilize(z, ctx.epsilon)
        return divide(relevance, z, ctx.guard), None, None


class Norm(Rule):
    """Proportional split for parameter-free linear operations (average pooling, mean, sum, interpolation):
    R_in = x ⊙ Jᵀ(R_out / z). The operation's own backward supplies Jᵀ, so the rule costs two elementwise
    operations (zennit's ``Norm``). Applied to the functional call (also the one inside ``nn.AvgPool2d``) by
    :class:`~.canonizers.FunctionalRules`: a plain gradient would spread relevance onto inactive units, where
    the following ReLU's gate would drop it.
    """

    def __init__(self, stabilizer: float = GUARD, epsilon: float = 0.0) -> None:
        self.stabilizer, self.epsilon = stabilizer, epsilon

    def apply(self, op: Callable[..., Tensor], x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``op(x, *args, **kwargs)`` with this rule as its backward; with ``epsilon`` it is LRP-ε for the linear
        map ``op`` (R / (z + ε sign z), as on ``nn.Linear``)."""
        self._slot()
        out = op(_TimesInput.apply(x, self), *args, **kwargs)
        return _OverOutput.apply(out, self.stabilizer, self.epsilon)


class _Sum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, alpha: float, rule: Sum) -> Tensor:
        out = a + alpha * b
        ctx.alpha, ctx.rule = alpha, rule
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, Tensor, None, None]:
        a, b, out = ctx.saved_tensors
        s = divide(relevance, out, ctx.rule.stabilizer)
        ra = (a * s).sum_to_size(a.shape)
        rb = (ctx.alpha * b * s).sum_to_size(b.shape)
        ctx.rule._record(ra, rb)
        return ra, rb, None, None


class Sum(Rule):
    """A residual add z = a + αb splits relevance in proportion to each branch's contribution:
    R_a = a ⊙ R/z, R_b = αb ⊙ R/z (zennit's ResNet canonizer with the Norm rule on its Sum). Applied to the
    functional add by :class:`~.canonizers.FunctionalRules`, since ``out += identity`` is no module.
    """

    def __init__(self, stabilizer: float = GUARD) -> None:
        self.stabilizer = stabilizer

    def apply(self, a: Tensor, b: Tensor, alpha: float = 1.0) -> Tensor:
        self._slot()
        return _Sum.apply(a, b, float(alpha), self)


class Unsupported(Rule):
    """Raises UnsupportedModelError (naming the module type) as soon as the module runs."""

    def __init__(self, method: str, reason: str) -> None:
        self.method, self.reason = method, reason

    def forward_pre_hook(self, module: nn.Module, inputs: tuple) -> None:
        where = f" ({self.name!r})" if self.name else ""
        raise UnsupportedModelError(
            f"{self.method} cannot handle the module {type(module).__name__}{where}: {self.reason}"
        )
