"""DLBacktrace (Sankarapu et al. 2024, arXiv 2411.12643): deterministic relevance through every node of the model.

Relevance starts at the target output (``multiplier``, default 1; the paper's examples use 100) and is sent back
through the real graph of one eager forward: no baseline, no sampling, no auxiliary model, so the same input
always gets the same map. The driver is LRP's (:mod:`.lrp`): rules on modules are forward hooks whose custom
autograd function carries the rule as its backward, functional operations get theirs through
:mod:`.intercept`, and one ``torch.autograd.grad`` returns the input relevance. An operation with no rule
raises UnsupportedModelError naming it and the module it runs in.

**Units.** A node that sums contributions is a unit: Linear/Conv (grouped and depthwise too; c_ij = w_ji x_i,
bias b_j, a BatchNorm right after it folded in: W' = diag(a) W, b' = a(b − μ) + β), a BatchNorm on its own
(c = a x), a residual add or subtraction (c = each branch, a constant operand is a bias), and average pooling,
adaptive average pooling, ``mean``, ``sum`` and nearest/linear interpolation (c = w x with w ≥ 0). With
P_j = Σ_i c_ij⁺, N_j = Σ_i |c_ij⁻|, b⁺ = max(b, 0), b⁻ = max(−b, 0) and the net input t_j = P_j + b⁺ − N_j − b⁻:

- default: R_i = Σ_j R_j |c_ij| / D_j with D_j = P'_j + N'_j + |b_j|: positive and negative contributors both
  receive positive relevance in proportion to the magnitude of their contribution, as in the authors' MIT
  releases; the bias keeps R_j |b_j| / D_j (reported in the ledger, not passed on). Known answer: x = [1, 2, 3],
  W = [[.5, .3, .2], [.1, .4, .5]], b = [.1, .2], R = [0, 100] → [3.8462, 30.7692, 57.6923].
- saturation: P', N' are P, N after the activation that reads the unit's output has had its say. With the
  activation's range (l, u): t < l → P' = 0 (the unit cannot be pushed further down, so the contributors pushing
  it up carry nothing), t > u → N' = 0; the other side then takes the unit's relevance less the bias share.
  A non-monotonic activation f (swish, GELU, hardswish) also compares f(t), f(P + b⁺) and f(−(N + b⁻)) where
  both sides are non-zero and drops the side that does not change the output (exact equality, as the authors).
- contrastive: two streams, R⁺ from the target and R⁻ from the other classes (rescaled to the same total).
  Where t_j > 0 the positive contributors carry R⁺_j (∝ c_ij / (P'_j + b⁺_j)) and the negative ones R⁻_j
  (∝ |c_ij| / (N'_j + b⁻_j)); where t_j ≤ 0 the roles swap; a unit whose contributions all have one sign
  sends both streams to them (as the authors' code does). The map is R⁺ − R⁻. This applies at the
  weighted units (Linear/Conv, BatchNorm folded in), as in the paper; adds, pooling and a lone BatchNorm
  (one contributor per unit) split each stream by magnitude as in the default mode: there every contribution
  after a ReLU is positive, so the stream rule would drop R⁻ at the first global average pool.

**Activation table** (``ACTIVATIONS``, range (l, u); the activation itself passes relevance unchanged):

- ReLU (0, —), the authors'. Their code tests a bound's truthiness, so the bound 0 is never applied there. We
  apply it, deliberately: a unit with t < 0 outputs 0 and every rule here gives a zero input zero relevance,
  so such a unit receives none and no map changes; the table then states what ReLU does.
- ReLU6 (0, 6) and hardtanh (its own limits): ours, exactly flat outside.
- LeakyReLU (—, —): ours, strictly monotonic and unbounded, no saturation.
- sigmoid (−4, 4), tanh (−2, 2): the authors'. hardsigmoid (−3, 3): ours, exactly flat outside.
- SiLU/swish (−6, —), non-monotonic: the authors'.
- GELU (−3.53, —), non-monotonic: ours; swish's −6 carried over by GELU(x) ≈ x σ(1.702 x), i.e. −6 / 1.702.
- hardswish (−3, —), non-monotonic: ours, exactly 0 below −3.

Any other operation on the signal (softmax, LayerNorm, exp, a product of two activations that is no gate, …)
raises UnsupportedModelError naming it and its module.

**Other nodes.** Max pooling (module or functional, adaptive too) routes each window's relevance to its winner
(torch's index: the first maximum where tied); concatenation, ``split``/``chunk``, indexing, flatten, view,
reshape, permute, squeeze, dropout and identity pass relevance through (their gradient is exactly that
routing); a product with a constant or division by one passes it through; an elementwise gate multiply
(squeeze-excitation) gives all of it to the signal (:mod:`.gating`, signal-take-all).

**Ledger** (``extras['ledger']``): for every node, in forward order, the relevance that reached its output
(``reached``), what it passed to its inputs (``passed``) and what it kept (``absorbed`` = reached − passed: the
bias share, plus relevance stopped by saturation); ``extras['bias_absorbed']`` sums it, so Σ R_in +
bias_absorbed = the start relevance, exactly for a bias-free ReLU network (0 absorbed).

Speed: one forward, plus per unit one extra forward with |W| on the layer's input and one transposed product.
The contrastive mode carries both streams through one backward pass (:func:`.paired_backward.paired_grad`):
each unit forms P, N and the masks once, and keeps nothing for a second pass. A unit needs one transposed
product per stream where one side carries it (W⁺ᵀα for the positive stream after a ReLU, |W⁻|ᵀβ for the
negative one) and two where both do (a unit read by a residual add); on resnet18 that convolution work alone
is about 2× the forward+backward floor. At a unit read by a ReLU the two streams usually need no masks at all
(:func:`_after_relu`); the other fast paths use float 0/1 masks (boolean ones cost far more on the CPU). On the
CPU a large unit's rule runs over slices of the batch (:func:`_by_samples`), an image layer's strided
transpose runs as a stride-1 convolution (:func:`.rules.subpixel_transpose`), and the convolutions with large
weights (the unit's own in the forward, run without the autograd graph the rule replaces, |W| x and the
transposed products) use weights kept in oneDNN's layout (:mod:`.packed_conv`): at a batch of one, reordering
and reading the weight is much of such a convolution's time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MethodError, UnsupportedModelError
from ..explanation import Explanation
from ..model import ModelAdapter
from ..registry import register_method
from . import packed_conv
from .canonizers import AVERAGE_MODULES, MergeBatchNorm, inplace_error
from .composites import STANDARD_FORWARD
from .gating import gate_multiply, gate_operands
from .intercept import ModuleStack, OpCall, OpRules, tensors
from .paired_backward import paired_grad
from .rules import Affine, Ledger, LinearRule, PassThrough, Unsupported, derived_weight


# ------------------------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class Saturation:
    """The range (lower, upper) beyond which an activation saturates; ``function`` for non-monotonic ones."""

    name: str
    lower: float | None = None
    upper: float | None = None
    function: Callable[[Tensor], Tensor] | None = None
    gate: bool = False


RELU = Saturation("relu", 0.0)
RELU6 = Saturation("relu6", 0.0, 6.0)
LEAKY_RELU = Saturation("leaky_relu")
SIGMOID = Saturation("sigmoid", -4.0, 4.0, gate=True)
TANH = Saturation("tanh", -2.0, 2.0)
HARDSIGMOID = Saturation("hardsigmoid", -3.0, 3.0, gate=True)
SILU = Saturation("silu", -6.0, None, F.silu)
GELU = Saturation("gelu", -6.0 / 1.702, None, F.gelu)
HARDSWISH = Saturation("hardswish", -3.0, None, F.hardswish)

ACTIVATIONS: dict[Any, Saturation] = {
    **dict.fromkeys((F.relu, torch.relu, Tensor.relu, F.relu_, torch.relu_, Tensor.relu_), RELU),
    F.relu6: RELU6,
    **dict.fromkeys((F.leaky_relu, F.leaky_relu_), LEAKY_RELU),
    **dict.fromkeys((torch.sigmoid, Tensor.sigmoid, F.sigmoid, Tensor.sigmoid_, torch.sigmoid_), SIGMOID),
    **dict.fromkeys((torch.tanh, Tensor.tanh, F.tanh, Tensor.tanh_, torch.tanh_), TANH),
    F.hardsigmoid: HARDSIGMOID,
    F.silu: SILU,
    F.gelu: GELU,
    F.hardswish: HARDSWISH,
}


def _saturation(call: OpCall) -> Saturation:
    if call.func is F.hardtanh:
        low = call.kwargs.get("min_val", call.args[1] if len(call.args) > 1 else -1.0)
        high = call.kwargs.get("max_val", call.args[2] if len(call.args) > 2 else 1.0)
        return Saturation("hardtanh", float(low), float(high))
    if call.func is F.gelu and call.kwargs.get("approximate", "none") != "none":
        return Saturation("gelu", GELU.lower, None, lambda t: F.gelu(t, approximate="tanh"))
    return ACTIVATIONS[call.func]


# --------------------------------------------------------------------------------------------- unit rule
def _ratio(r: Tensor, d: Tensor) -> Tensor:
    """r / d for d ≥ 0, and 0 where d = 0 (a unit with nothing to share keeps its relevance)."""
    return torch.div(r, d).nan_to_num_(0.0, 0.0, 0.0)


def coefficients(
    r: Tensor,
    p: Tensor,
    n: Tensor,
    t: Tensor,
    bias: Tensor | float,
    activation: Saturation | None,
    stream: int = 0,
) -> tuple[Tensor, Tensor]:
    """(α, β): what each unit gives per unit of |contribution| to its positive and its negative contributors.

    ``r``: relevance at the units; ``p``/``n``: the sums of positive and |negative| contributions; ``t``: the net
    input (bias included); ``bias``: the bias (broadcastable); ``stream``: 0 for the default mode, +1/−1 for the
    positive/negative stream of the contrastive mode. α is β (the same tensor) when the two sides are treated
    alike, so the caller can use one transposed product.
    """
    bias = torch.as_tensor(bias, dtype=r.dtype, device=r.device)
    b_pos, b_neg = bias.clamp(min=0), (-bias).clamp(min=0)
    keep_p = keep_n = None
    if activation is not None:
        if activation.lower is not None:
            keep_p = t >= activation.lower
        if activation.upper is not None:
            keep_n = t <= activation.upper
        if activation.function is not None:
            f = activation.function
            both = (p > 0) & (n > 0)
            if keep_p is not None:
                both &= keep_p
            if keep_n is not None:
                both &= keep_n
            f_t = f(t)
            drop_n = both & (f_t == f(p + b_pos))
            drop_p = both & ~drop_n & (f_t == f(-(n + b_neg)))
            keep_n = ~drop_n if keep_n is None else keep_n & ~drop_n
            keep_p = ~drop_p if keep_p is None else keep_p & ~drop_p
    p_kept = p if keep_p is None else torch.where(keep_p, p, 0.0)
    n_kept = n if keep_n is None else torch.where(keep_n, n, 0.0)
    if stream == 0:
        share = _ratio(r, p_kept + n_kept + bias.abs())
        if keep_p is None and keep_n is None:
            return share, share
        alpha = share if keep_p is None else torch.where(keep_p, share, 0.0)
        beta = share if keep_n is None else torch.where(keep_n, share, 0.0)
        # where saturation dropped a side the unit usually has no relevance to give (a ReLU below 0 outputs 0,
        # so nothing downstream sends it any): then both sides get the same and one product serves
        return (alpha, alpha) if torch.equal(alpha, beta) else (alpha, beta)
    up = t > 0
    carry_p = up if stream > 0 else ~up
    # a unit whose contributions all have one sign sends both streams there (as the authors' code does)
    carry_p = torch.where(n_kept == 0, p_kept > 0, torch.where(p_kept == 0, False, carry_p))
    alpha = _ratio(r, p_kept + b_pos).masked_fill_(~carry_p, 0.0)
    beta = _ratio(r, n_kept + b_neg).masked_fill_(carry_p, 0.0)
    if keep_p is not None:
        alpha.masked_fill_(~keep_p, 0.0)
    if keep_n is not None:
        beta.masked_fill_(~keep_n, 0.0)
    return alpha, beta


def _unsaturated(relevances: list[Tensor], t: Tensor, activation: Saturation | None) -> list[bool]:
    """For each relevance tensor R (one per stream), True when ``activation`` drops no side at any unit that
    has relevance (a monotonic activation's range test on t only; non-monotonic ones need P and N, so they
    never take this shortcut). The overshoot beyond the range is formed once for all streams.

    Written with float arithmetic, as the rest of the fast paths: on the CPU, comparisons, ``where`` and
    ``masked_fill`` over boolean masks cost 5 to 20 times a float multiply. A unit counts as relevant when
    R · (t − l) is non-zero, so one whose product underflows (|R| and the overshoot both below ~1e-19) is
    treated as unsaturated; its relevance is then too small to matter.
    """
    if activation is None or activation.function is not None:
        return [activation is None] * len(relevances)
    excesses = []  # the overshoot below the lower bound (as t − l ≤ 0) and above the upper one
    if activation.lower is not None:
        excesses.append(t.clamp(max=0) if activation.lower == 0 else (t - activation.lower).clamp_(max=0))
    if activation.upper is not None:
        excesses.append((t - activation.upper).clamp_(min=0))
    return [not any(_nonzero(excess * r) for excess in excesses) for r in relevances]


def _carries(t: Tensor | None) -> bool:
    """Whether a side's coefficients carry anything (None: known to carry nothing)."""
    return t is not None and _nonzero(t)


def _nonzero(t: Tensor) -> bool:
    low, high = torch.aminmax(t)
    return bool(low) or bool(high)


def _split(x: Tensor, alpha: Tensor, beta: Tensor, transpose: Callable[[Tensor], Tensor]) -> Tensor:
    """Σ_j α_j c_ij⁺ + β_j |c_ij⁻| for contributions c = w x with w ≥ 0 (transpose: s ↦ Jᵀs)."""
    if alpha is beta:
        return transpose(alpha).mul_(x.abs())
    if bool(x.amin() >= 0):
        return transpose(alpha).mul_(x)
    return x.clamp(min=0) * transpose(alpha) - x.clamp(max=0) * transpose(beta)


@dataclass
class _Cell:
    """What the forward learnt about one unit: the activation that reads its output."""

    activation: Saturation | None = None
    readers: int = 0


class _State:
    """Shared by the rules of one backtrace call."""

    def __init__(self) -> None:
        self.stream = 0
        self.reached, self.passed = Ledger(), Ledger()
        self.units: dict[int, tuple[Tensor, _Cell]] = {}
        self.cells: dict[int, tuple[Any, _Cell]] = {}
        self.gates: dict[int, Tensor] = {}
        self.first: tuple | None = None  # the positive stream's gradients at the node the negative one is at
        self.done: dict[int, Any] = {}  # per node, its positive result, computed in its negative call

    def unit(self, out: Tensor, key: Any) -> _Cell:
        cell = _Cell()
        self.units[id(out)] = (out, cell)
        self.cells[id(key)] = (key, cell)
        return cell

    def cell(self, key: Any) -> _Cell | None:
        hit = self.cells.get(id(key))
        return hit[1] if hit is not None and hit[0] is key else None

    def read(self, x: Tensor, activation: Saturation | None) -> None:
        """The forward applied ``activation`` to ``x``: if ``x`` is a unit's output, that unit saturates so."""
        hit = self.units.get(id(x))
        if hit is None or hit[0] is not x:
            return
        cell = hit[1]
        cell.readers += 1
        # a unit read by two different activations has no single range: no saturation
        cell.activation = activation if cell.readers == 1 else None

    def forward_done(self) -> None:
        self.units.clear()
        self.gates.clear()
        self.passed.close()

    def ledgers(self, negative: bool = False) -> dict[str, dict[str, Tensor]]:
        reached_totals, passed_totals = self._totals[-1 if negative else 1]
        table = {}
        for name in reached_totals:
            reached, passed = reached_totals[name], passed_totals.get(name)
            if reached is None or passed is None:
                continue
            table[name] = {"reached": reached, "passed": passed, "absorbed": reached - passed}
        return table

    def start(self, contrastive: bool) -> None:
        """Before the backward: empty ledgers for the positive (or default) stream, and for the negative one."""
        self.stream = 1 if contrastive else 0
        self._totals = {
            stream: (dict.fromkeys(self.reached.totals), dict.fromkeys(self.passed.totals))
            for stream in (1, -1)
        }
        self.switch(None)

    def switch(self, first: tuple | None) -> None:
        """Serve the negative stream (``first``: the positive stream's gradients at the node's outputs) or, for
        None, the positive one: the rules read ``stream``, the ledgers fill that stream's totals (see
        :func:`.paired_backward.paired_grad`)."""
        if self.stream != 0:
            self.stream = 1 if first is None else -1
        self.first = first
        self.reached.totals, self.passed.totals = self._totals[1 if first is None else -1]

    def paired(self, key: Any, r: Tensor, compute: Callable[[tuple], list]) -> Any:
        """``compute(((r, stream),))[0]``, except in the contrastive mode's paired backward: the negative stream's
        call of a node computes both streams at once, sharing the node's per-unit work (P, N, the masks), and
        keeps the positive result for the positive call of the same node, which comes right after it."""
        if self.stream < 0 and self.first is not None:
            first = self.first[0]
            positive, negative = compute(((torch.zeros_like(r) if first is None else first, 1), (r, -1)))
            self.done[id(key)] = positive
            return negative
        if self.stream > 0:
            hit = self.done.pop(id(key), None)
            if hit is not None:
                return hit
        return compute(((r, self.stream),))[0]


# ------------------------------------------------------------------------------------------ affine units
class BacktraceAffine(LinearRule):
    """The DLBacktrace rule of a Linear/Conv/BatchNorm unit (module docstring): R_i = Σ_j α_j c_ij⁺ + β_j |c_ij⁻|.

    P and N come from A = |W| |x| and the forward's z: P = (A + z − b)/2, N = (A − z + b)/2, so the rule costs
    one extra product with |W| and one transposed product (two where both sides carry relevance). In the
    contrastive mode a unit's negative call forms P and N once for both streams (:meth:`_State.paired`).
    """

    def __init__(self, state: _State) -> None:
        self.state = state

    def attach(self, layer: Affine, x: Tensor, z: Tensor) -> Tensor:
        out = super().attach(layer, x, z)
        if out is not z:
            self.state.reached.slot(self.name)
            self.state.unit(out, layer)
        return out

    def relevance(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        state = self.state
        state.reached.add(self.name, r)
        if layer.elementwise or state.stream == 0:
            return _by_samples(lambda i: [self._default(layer, *_rows(i, x, z, r))], z)[0]

        def compute(streams: tuple) -> list[Tensor]:
            def part(i: slice | None) -> list[Tensor]:
                rows = _rows(i, x, z, *(r for r, _ in streams))
                return self._streams(layer, *rows[:2], [(r, s) for r, (_, s) in zip(rows[2:], streams)])

            return _by_samples(part, z)

        return state.paired(layer, r, compute)

    def _activation(self, layer: Affine) -> Saturation | None:
        cell = self.state.cell(layer)
        return cell.activation if cell else None

    def _default(self, layer: Affine, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        activation, bias = self._activation(layer), layer.bias_as(z)
        absolute = layer.absolute()
        nonnegative = x.amin().item() >= 0
        size = x if nonnegative else x.abs()
        magnitude = layer.linear(size, absolute)
        if _unsaturated([r], z, activation)[0]:
            # the common case: no unit with relevance is saturated, so D = Σ|c| + |b| and one product
            share = _ratio(r, magnitude.add_(torch.as_tensor(bias).abs()))
            return layer.transpose(share, absolute, x).mul_(size)
        p, n = _sides(magnitude, z, bias)
        alpha, beta = coefficients(r, p, n, z, bias, activation)
        return _backward(layer, x, nonnegative, alpha, beta)

    def _streams(self, layer: Affine, x: Tensor, z: Tensor, streams: tuple) -> list[Tensor]:
        activation, bias = self._activation(layer), layer.bias_as(z)
        nonnegative = x.amin().item() >= 0
        magnitude = layer.linear(x if nonnegative else x.abs(), layer.absolute())
        p, n = _sides(magnitude, z, bias)
        del magnitude
        pairs = _after_relu(p, n, z, bias, streams) if activation is RELU and len(streams) == 2 else None
        if pairs is None:
            plain = _unsaturated([r for r, _ in streams], z, activation)
            carry = _Carry(p, n, z, bias) if any(plain) else None
            pairs = []
            for (r, stream), fast in zip(streams, plain):
                if fast:
                    pairs.append(carry.coefficients(r, stream))
                else:
                    pairs.append(coefficients(r, p, n, z, bias, activation, stream))
        if nonnegative and len(pairs) == 2 and _batched(z):
            return _backward_batched(layer, x, pairs)
        return [_backward(layer, x, nonnegative, alpha, beta) for alpha, beta in pairs]


def _after_relu(p: Tensor, n: Tensor, t: Tensor, bias: Tensor | float, streams: tuple) -> list | None:
    """:func:`coefficients` of both streams at a unit read by a ReLU, in the usual case: every unit with positive
    relevance has t > 0 and P > 0, every one with negative relevance t > 0 and N > 0. There the ReLU drops no side,
    and the stream rule carries the positive stream to the positive contributors only (α = R⁺ / (P + b⁺), β None:
    nothing) and the negative stream to the negative ones only (β = R⁻ / (N + b⁻)), with no masks to form. None
    when some unit with relevance is outside that case (the general rule then runs)."""
    (positive, _), (negative, _) = streams
    for side, r in ((p, positive), (n, negative)):
        # sign(min(t, side)) − 1 is 0 exactly where t > 0 and side > 0
        if _nonzero(torch.minimum(t, side).sign_().sub_(1).mul_(r)):
            return None
    pb, nb = _with_bias(p, n, bias)
    return [(_ratio(positive, pb), None), (None, _ratio(negative, nb))]


def _with_bias(p: Tensor, n: Tensor, bias: Tensor | float) -> tuple[Tensor, Tensor]:
    """(P + b⁺, N + b⁻): the denominators of the stream rule's two sides."""
    if isinstance(bias, Tensor):
        return p + bias.clamp(min=0), n - bias.clamp(max=0)
    return p + max(bias, 0.0), n + max(-bias, 0.0)


def _batched(z: Tensor) -> bool:
    """Whether the two streams' products with one weight run as one product over both (batch 2N): on a GPU, for
    a Linear unit, and on the CPU where the batch's maps are small (N·H·W ≤ 256, resnet18's last two stages at
    batch 1). There a product does little arithmetic per weight element and its time goes to reading the weight
    from memory, which one product over both streams does once; for larger maps the copies that join and
    split the streams cost more."""
    return z.device.type != "cpu" or z.ndim < 3 or z.shape[0] * z[0, 0].numel() <= 256


def _backward_batched(layer: Affine, x: Tensor, pairs: list) -> list[Tensor]:
    """:func:`_backward` for x ≥ 0 and both streams: R_s = x ⊙ (W⁺ᵀα_s + |W⁻|ᵀβ_s), each weight's products
    for the streams that need it in one call."""
    n = x.shape[0]
    totals: list[Tensor | None] = [None, None]
    for side, weight in ((0, layer.positive), (1, layer.minus)):
        needed = [k for k, pair in enumerate(pairs) if pair[side] is not None]
        if not needed:
            continue
        if len(needed) == 2:
            signal = torch.cat([pairs[0][side], pairs[1][side]])
            parts = dict(
                zip(needed, layer.transpose(signal, weight(), x.new_empty((2 * n, *x.shape[1:]))).split(n))
            )
        else:
            parts = {needed[0]: layer.transpose(pairs[needed[0]][side], weight(), x)}
        for k, part in parts.items():
            totals[k] = part if totals[k] is None else totals[k] + part
    return [torch.zeros_like(x) if t is None else t * x for t in totals]


SLICE = 1 << 19  # elements of a unit's output per slice of the batch (CPU)


def _by_samples(compute: Callable[[slice | None], list[Tensor]], z: Tensor) -> list[Tensor]:
    """``compute(None)`` (the whole batch); on the CPU, ``compute(rows)`` over slices of the batch with at most
    :data:`SLICE` elements of the unit's output ``z`` each, concatenated. A unit's rule forms a dozen
    temporaries of z's size; on a large layer (the first convolution of an image model at batch 8: 26 MB each)
    fresh ones are fresh pages from the kernel, which cost more than the arithmetic, while a slice's
    temporaries reuse the memory the previous slice freed. Every operation is per sample, so the result is the
    same."""
    per = max(1, SLICE // max(1, z.numel() // max(1, z.shape[0])))
    if z.device.type != "cpu" or per >= z.shape[0]:
        return compute(None)
    parts = [compute(slice(i, i + per)) for i in range(0, z.shape[0], per)]
    return [torch.cat(column) for column in zip(*parts)]


def _rows(rows: slice | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    return tensors if rows is None else tuple(t[rows] for t in tensors)


def _sides(magnitude: Tensor, z: Tensor, bias: Tensor | float) -> tuple[Tensor, Tensor]:
    """(P, N) from A = Σ_i |c_ij| (``magnitude``, overwritten) and the net input z − b."""
    net = z - bias
    p = (magnitude + net).mul_(0.5).clamp_(min=0)
    n = magnitude.sub_(net).mul_(0.5).clamp_(min=0)
    return p, n


def _backward(
    layer: Affine, x: Tensor, nonnegative: bool, alpha: Tensor | None, beta: Tensor | None
) -> Tensor:
    """R_i = Σ_j α_j c_ij⁺ + β_j |c_ij⁻| with c = W x: the transposed products the coefficients need (None: a
    side known to carry nothing)."""
    if nonnegative:
        # x ≥ 0: R = x ⊙ (W⁺ᵀα + |W⁻|ᵀβ), one product where a side is None (after a ReLU the positive stream
        # has only α, the negative one only β). A side that happens to be all zero costs a product but needs no
        # test: its product adds exact zeros (the tests cost more than the rare product they would save).
        if alpha is beta:
            return layer.transpose(alpha, layer.absolute(), x).mul_(x)
        if beta is None:
            return layer.transpose(alpha, layer.positive(), x).mul_(x)
        if alpha is None:
            return layer.transpose(beta, layer.minus(), x).mul_(x)
        return _up(layer, x, alpha, beta).mul_(x)
    if (alpha is None and not _carries(beta)) or (beta is None and not _carries(alpha)):
        return torch.zeros_like(x)
    if alpha is beta:
        return layer.transpose(alpha, layer.absolute(), x).mul_(x.abs())
    # the positive contributions of x⁺ and the negative ones of x⁻ get up = W⁺ᵀα + |W⁻|ᵀβ, the others
    # down = |W⁻|ᵀα + W⁺ᵀβ
    if layer.narrow:
        # an image layer (its map is the answer): up ± down = |W|ᵀ(α + β), ±Wᵀ(α − β), so x⁺ up − x⁻ down
        # is two products with as few output channels as the image has
        if beta is None:
            total, difference = alpha, alpha
        elif alpha is None:
            total, difference = beta, beta.neg()
        else:
            total, difference = alpha + beta, alpha - beta
        both = layer.transpose(total, layer.absolute(), x).mul_(x.abs())
        return both.add_(layer.transpose(difference, layer.weight, x).mul_(x)).mul_(0.5)
    # elsewhere up and down are formed apart, so a contributor that gets nothing gets exactly 0: one product
    # over [W⁺, |W⁻|] where one side carries nothing (a unit read by a ReLU), else down = up + Wᵀ(β − α)
    if not _carries(beta):
        up, down = layer.transpose_sides(alpha, x)
    elif not _carries(alpha):
        down, up = layer.transpose_sides(beta, x)
    else:
        up = _up(layer, x, alpha, beta)
        down = layer.transpose(beta - alpha, layer.weight, x).add_(up)
    return x.clamp(min=0) * up - x.clamp(max=0) * down


def _up(layer: Affine, x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """W⁺ᵀα + |W⁻|ᵀβ as two products (as fast as one over the weights stacked, without the stacking copies)."""
    return layer.transpose(alpha, layer.positive(), x).add_(layer.transpose(beta, layer.minus(), x))


class _Carry:
    """:func:`coefficients` of a contrastive stream where no unit with relevance is saturated: the carrying side
    is (P > 0) ∧ (t > 0 for the positive stream, t ≤ 0 for the negative, or N = 0), α = R / (P + b⁺) there and
    β = R / (N + b⁻) elsewhere (0 where that is 0/0). The masks both streams share are formed once, as 0/1
    floats (see :func:`_unsaturated` for why not boolean ones)."""

    def __init__(self, p: Tensor, n: Tensor, t: Tensor, bias: Tensor | float) -> None:
        self.some_p, self.lone, self.up = p.sign(), 1 - n.sign(), t.sign().clamp_(min=0)
        pb, nb = _with_bias(p, n, bias)
        self.inverse_p = pb.reciprocal_().nan_to_num_(0.0, 0.0, 0.0)
        self.inverse_n = nb.reciprocal_().nan_to_num_(0.0, 0.0, 0.0)

    def coefficients(self, r: Tensor, stream: int) -> tuple[Tensor, Tensor]:
        side = self.up if stream > 0 else 1 - self.up
        carried = torch.maximum(side, self.lone).mul_(self.some_p).mul_(r)
        return carried * self.inverse_p, torch.sub(r, carried, out=carried).mul_(self.inverse_n)


# -------------------------------------------------------------------------------------- functional units
class _SumUnit(torch.autograd.Function):
    """z = Σ_k a_k x_k + bias (a residual add); the backward is the unit rule over the terms."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, info: tuple, *terms: Tensor) -> Tensor:
        ctx.info = info
        ctx.save_for_backward(value, *terms)
        return value

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple:
        value, *terms = ctx.saved_tensors
        (coefs, bias, state, name, cell) = ctx.info

        def compute(streams: tuple) -> list[list[Tensor]]:
            parts = [(term if c == 1 else c * term).expand_as(value) for c, term in zip(coefs, terms)]
            sizes = [part.abs() for part in parts]
            plain = _unsaturated([r_s for r_s, _ in streams], value, cell.activation)
            sides = None
            if any(plain):
                # D = Σ|c| + |b|, and each term gets R |c| / D (coefficients' default where nothing saturates)
                total = sum(sizes[1:], sizes[0])
                if isinstance(bias, Tensor) or bias:
                    total = total + (bias.abs() if isinstance(bias, Tensor) else abs(bias))
            results = []
            for (r_s, _), fast in zip(streams, plain):
                if fast:
                    share = _ratio(r_s, total)
                    results.append(
                        [(share * size).sum_to_size(term.shape) for size, term in zip(sizes, terms)]
                    )
                    continue
                if sides is None:
                    sides = (
                        sum(part.clamp(min=0) for part in parts),
                        sum((-part).clamp(min=0) for part in parts),
                    )
                alpha, beta = coefficients(r_s, *sides, value, bias, cell.activation)
                out = []
                for part, size, term in zip(parts, sizes, terms):
                    rel = (
                        alpha * size
                        if alpha is beta
                        else alpha * part.clamp(min=0) + beta * (-part).clamp(min=0)
                    )
                    out.append(rel.sum_to_size(term.shape))
                results.append(out)
            return results

        with torch.no_grad():
            out = state.paired(ctx, r, compute)
        state.reached.add(name, r)
        state.passed.add(name, *out)
        return (None, None, *out)


class _PositiveUnit(torch.autograd.Function):
    """z = op(x) for a linear op with non-negative weights (average pooling, mean, sum, interpolation)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor, info: tuple) -> Tensor:
        ctx.info = info
        ctx.save_for_backward(value, x)
        return value

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple:
        value, x = ctx.saved_tensors
        op, state, name, cell = ctx.info

        def transpose(s: Tensor) -> Tensor:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                return torch.autograd.grad(op(leaf), leaf, s)[0]

        def compute(streams: tuple) -> list[Tensor]:
            p, n = _sides(op(x.abs()), value, 0.0)
            results = []
            plain = _unsaturated([r_s for r_s, _ in streams], value, cell.activation)
            for (r_s, _), fast in zip(streams, plain):
                alpha, beta = coefficients(r_s, p, n, value, 0.0, None if fast else cell.activation)
                results.append(_split(x, alpha, beta, transpose))
            return results

        with torch.no_grad():
            out = state.paired(ctx, r, compute)
        state.reached.add(name, r)
        state.passed.add(name, out)
        return None, out, None


_ADD = {torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__}
_SUB = {torch.sub, Tensor.sub, Tensor.sub_, Tensor.__sub__, Tensor.__isub__, torch.subtract, Tensor.subtract}
_RSUB = {Tensor.__rsub__, torch.rsub}
_AVERAGE = {
    torch.mean,
    Tensor.mean,
    torch.sum,
    Tensor.sum,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.interpolate,
}
_MUL = {torch.mul, Tensor.mul, Tensor.mul_, Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__, torch.multiply}
_DIV = {torch.div, Tensor.div, Tensor.div_, Tensor.__truediv__, Tensor.__itruediv__, torch.divide}
# relevance follows the gradient: pure routing (each output is one input, or a max over inputs)
PASS = {
    torch.flatten, Tensor.flatten, Tensor.unflatten, torch.unflatten, Tensor.view, Tensor.view_as,
    Tensor.reshape, torch.reshape, Tensor.reshape_as, Tensor.permute, torch.permute, Tensor.transpose,
    torch.transpose, Tensor.movedim, torch.movedim, Tensor.contiguous, Tensor.squeeze, torch.squeeze,
    Tensor.unsqueeze, torch.unsqueeze, torch.cat, torch.concat, torch.concatenate, torch.stack, Tensor.split,
    torch.split, Tensor.chunk, torch.chunk, torch.unbind, Tensor.unbind, Tensor.__getitem__, Tensor.narrow,
    torch.narrow, Tensor.select, Tensor.expand, Tensor.expand_as, Tensor.repeat, Tensor.clone, torch.clone,
    Tensor.to, Tensor.float, Tensor.type_as, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.alpha_dropout, F.feature_alpha_dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d_with_indices, F.adaptive_max_pool3d_with_indices, F.pad, torch.amax, Tensor.amax,
    torch.max, Tensor.max,
}  # fmt: skip
# read without passing relevance on (comparisons, indices, conversions to Python)
READ = {
    Tensor.__bool__, Tensor.__len__, Tensor.item, Tensor.tolist, Tensor.__format__, Tensor.__repr__,
    Tensor.__hash__, Tensor.argmax, torch.argmax, Tensor.argmin, torch.argmin, torch.isfinite, torch.isnan,
    Tensor.any, Tensor.all, torch.any, torch.all, Tensor.__gt__, Tensor.__lt__, Tensor.__ge__, Tensor.__le__,
    Tensor.__eq__, Tensor.__ne__, Tensor.gt, Tensor.lt, Tensor.ge, Tensor.le, Tensor.eq, Tensor.ne,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, Tensor.new_zeros, Tensor.new_ones,
    Tensor.new_empty, Tensor.new_full, Tensor.type, Tensor.cpu, Tensor.numpy,
}  # fmt: skip
RULE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Ops:
    """The handlers for functional operations, and the check that every other operation has a rule."""

    def __init__(self, state: _State, source: Tensor, method: str) -> None:
        self.state, self.source, self.method = state, source, method
        self.stack: ModuleStack | None = None
        handlers: dict[Any, Callable] = dict.fromkeys(ACTIVATIONS, self._activation)
        handlers[F.hardtanh] = self._activation
        handlers.update(dict.fromkeys(_ADD | _SUB | _RSUB, self._sum))
        handlers.update(dict.fromkeys(_AVERAGE, self._average))
        handlers.update(dict.fromkeys(_MUL | _DIV, self._product))
        handlers[torch.conv2d] = self._convolution
        self.handlers = handlers

    def tracked(self, t: Any) -> bool:
        return isinstance(t, Tensor) and t.requires_grad and (t.grad_fn is not None or t is self.source)

    def observe(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Raise UnsupportedModelError for an operation on the signal that has no rule."""
        if func in self.handlers or func in PASS or func in READ:
            return
        module, _ = self.stack.current()
        if isinstance(module, RULE_MODULES):
            return
        if any(self.tracked(t) for t in tensors(args, kwargs)):
            raise UnsupportedModelError(
                f"{self.method} has no rule for {getattr(func, '__name__', func)!s} in {self.stack.where()}; "
                "rules exist for Linear/Conv/BatchNorm, the activations ReLU, ReLU6, LeakyReLU, sigmoid, tanh, "
                "hardsigmoid, hardtanh, SiLU, GELU and hardswish, adds, average and max pooling, mean/sum, "
                "gate products and reshaping operations"
            )

    def _name(self, call: OpCall, label: str) -> str:
        return f"{call.name or 'model'} ({label})"

    def _activation(self, call: OpCall) -> Any:
        x = call.args[0] if call.args else None
        if not self.tracked(x):
            return NotImplemented
        spec = _saturation(call)
        self.state.read(call._target if call.inplace else x, spec)
        value = call.run()
        out = PassThrough.apply(x, value.detach())
        if spec.gate:
            self.state.gates[id(out)] = out
        return call.finish(out)

    def _convolution(self, call: OpCall) -> Any:
        """A Conv2d's own convolution, run without its autograd graph (the unit's rule replaces it: its hook
        attaches the rule to the output) and with the weight in oneDNN's layout (:mod:`.packed_conv`, which
        returns None, and the call then runs as made, wherever it does not apply)."""
        module = call.module
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        given = dict(zip(names, call.args)) | call.kwargs
        x, weight, bias = given.get("input"), given.get("weight"), given.get("bias")
        if not isinstance(module, nn.Conv2d) or weight is not module.weight or not self.tracked(x):
            return NotImplemented
        geometry = {key: given[key] for key in names[3:] if key in given}
        own = derived_weight(module.weight, "own", module.weight.detach)
        with torch.no_grad():
            out = packed_conv.conv(x.detach(), own, **geometry)
            if out is None:
                return NotImplemented
            if bias is not None:
                out += bias.detach().view(1, -1, 1, 1)
        return out

    def _sum(self, call: OpCall) -> Any:
        a, b = (*call.args, None, None)[:2]
        alpha = call.kwargs.get("alpha", 1)
        if call.func in _SUB:
            coefs = (1.0, -float(alpha))
        elif call.func in _RSUB:
            coefs = (-float(alpha), 1.0)
        else:
            coefs = (1.0, float(alpha))
        terms, kept, bias = [], [], 0.0
        for operand, coef in zip((a, b), coefs):
            if self.tracked(operand):
                terms.append(operand)
                kept.append(coef)
            elif isinstance(operand, Tensor):
                bias = bias + coef * operand.detach()
            elif isinstance(operand, (int, float)):
                bias = bias + coef * operand
            else:
                return NotImplemented
        if not terms:
            return NotImplemented
        value = call.run().detach()
        name = self._name(call, "+" if call.func in _ADD else "−")
        state = self.state
        state.reached.slot(name)
        state.passed.slot(name)
        cell = _Cell()
        bias = bias.expand_as(value) if isinstance(bias, Tensor) else bias
        out = _SumUnit.apply(value, (tuple(kept), bias, state, name, cell), *terms)
        state.units[id(out)] = (out, cell)
        return call.finish(out)

    def _average(self, call: OpCall) -> Any:
        x = call.args[0] if call.args else None
        if not self.tracked(x):
            return NotImplemented
        if call.func is F.interpolate:
            mode = call.kwargs.get("mode", call.args[3] if len(call.args) > 3 else "nearest")
            if mode not in ("nearest", "linear", "bilinear", "trilinear", "area", "nearest-exact"):
                raise UnsupportedModelError(
                    f"{self.method} cannot handle {call.where()}: interpolation mode {mode!r} has negative "
                    "weights; nearest, (bi/tri)linear and area are supported"
                )
        func, rest, kwargs = call.func, call.args[1:], call.kwargs

        def op(t: Tensor) -> Tensor:
            return func(t, *rest, **kwargs)

        value = call.run().detach()
        name = call.name if isinstance(call.module, AVERAGE_MODULES) else self._name(call, func.__name__)
        state = self.state
        state.reached.slot(name)
        state.passed.slot(name)
        cell = _Cell()
        out = _PositiveUnit.apply(value, x, (op, state, name, cell))
        state.units[id(out)] = (out, cell)
        return call.finish(out)

    def _product(self, call: OpCall) -> Any:
        a, b = (*call.args, None, None)[:2]
        if call.func is Tensor.__rmul__:
            a, b = b, a
        a_tracked, b_tracked = self.tracked(a), self.tracked(b)
        if a_tracked and b_tracked:
            pair = gate_operands(a, b, self.state.gates) if call.func in _MUL else None
            if pair is None:
                raise UnsupportedModelError(
                    f"{self.method} cannot handle {call.where()}: it multiplies or divides two activations "
                    f"({getattr(call.func, '__name__', call.func)}) and neither is a recognisable gate (a "
                    "broadcast scale or a sigmoid-like output); only gate products have a rule"
                )
            name = self._name(call, "gate ×")
            state = self.state
            state.reached.slot(name)
            state.passed.slot(name)

            def record(r: Tensor, r_signal: Tensor, r_gate: Tensor) -> None:
                state.reached.add(name, r)
                state.passed.add(name, r_signal, r_gate)

            return call.finish(gate_multiply(*pair, share=0.0, record=record))
        if a_tracked or b_tracked:
            x = a if a_tracked else b
            if call.func in _DIV and not a_tracked:
                raise UnsupportedModelError(
                    f"{self.method} cannot handle {call.where()}: it divides by an activation"
                )
            return call.finish(PassThrough.apply(x, call.run().detach()))
        return NotImplemented


# ------------------------------------------------------------------------------------------------ driver
def _assign(model: nn.Module, state: _State, method: str) -> dict[nn.Module, Any]:
    merge = MergeBatchNorm()
    assignment: dict[nn.Module, Any] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if type(module).forward not in STANDARD_FORWARD:  # e.g. timm's Conv2dSame, which pads by itself
                reason = f"a {type(module).__name__} subclass with its own forward"
                assignment[module] = Unsupported(method, reason).bind(name or "model", None)
                continue
            assignment[module] = merge.track(BacktraceAffine(state).bind(name or "model", state.passed))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            assignment[module] = merge.norm(BacktraceAffine(state).bind(name or "model", state.passed))
    return assignment


def _seeds(logits: Tensor, score: Tensor, target: Any, multiplier: float) -> tuple[Tensor, Tensor]:
    """Start relevance of the positive stream (``multiplier`` at the target; for a callable target, the
    score's gradient w.r.t. the logits, scaled) and of the negative stream (the other classes, uniform,
    rescaled to the same total)."""
    if isinstance(target, Tensor):
        positive = torch.zeros_like(logits).scatter_(1, target.view(-1, 1), multiplier)
    else:
        (grad,) = torch.autograd.grad(score.sum(), logits, retain_graph=True)
        positive = grad.detach() * multiplier
    others = (positive == 0).to(logits.dtype)
    total = positive.abs().sum(1, keepdim=True)
    negative = others * _ratio(total, others.sum(1, keepdim=True))
    return positive, negative


def _map(relevance: Tensor) -> Tensor:
    return relevance.sum(1) if relevance.ndim > 2 else relevance


def attribute(
    adapter: ModelAdapter, x: Tensor, target: Any, multiplier: float, contrastive: bool
) -> Explanation:
    """Input relevance by DLBacktrace: one forward with the rules, one backward per stream."""
    method = "backtrace_contrastive" if contrastive else "backtrace"
    source = x.detach().clone().requires_grad_(True)
    state = _State()
    ops = _Ops(state, source, method)
    assignment = _assign(adapter.model, state, method)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(adapter.evaluating())
            stack.enter_context(adapter.rules(assignment))
            ops.stack = stack.enter_context(ModuleStack(adapter.model))
            stack.enter_context(OpRules(ops.handlers, stack=ops.stack, observe=ops.observe))
            try:
                logits = adapter.forward(source)
            finally:
                state.forward_done()
        score = adapter.score(logits, target)
        positive_seed, negative_seed = _seeds(logits, score, target, multiplier)
        state.start(contrastive)
        negative, negative_ledger = None, None
        if contrastive:
            positive, negative = paired_grad(logits, source, positive_seed, negative_seed, state.switch)
            negative_ledger = state.ledgers(negative=True)
        else:
            (positive,) = torch.autograd.grad(logits, source, positive_seed, allow_unused=True)
            positive = torch.zeros_like(x) if positive is None else positive
        ledger = state.ledgers()
    except RuntimeError as error:
        unsupported = inplace_error(method, error)
        if unsupported is None:
            raise
        raise unsupported from error
    finally:
        state.done.clear()
        state.cells.clear()
    relevance = positive if negative is None else positive - negative
    extras: dict[str, Any] = {
        "ledger": ledger,
        "layer_relevance": {name: row["passed"] for name, row in ledger.items()},
        "bias_absorbed": _absorbed(ledger, positive),
        "output_relevance": positive_seed.sum(1),
        "input_relevance": positive.flatten(1).sum(1),
    }
    if contrastive:
        extras.update(
            positive=_map(positive),
            negative=_map(negative),
            ledger_negative=negative_ledger,
            bias_absorbed_negative=_absorbed(negative_ledger, negative),
            output_relevance_negative=negative_seed.sum(1),
            input_relevance_negative=negative.flatten(1).sum(1),
        )
    return Explanation(
        attribution=_map(relevance),
        method=method,
        target=target if isinstance(target, Tensor) else None,
        score=score.detach(),
        pixel=relevance,
        options={"multiplier": multiplier},
        extras=extras,
    )


def _absorbed(ledger: dict[str, dict[str, Tensor]], relevance: Tensor) -> Tensor:
    total = relevance.new_zeros(relevance.shape[0])
    for row in ledger.values():
        total = total + row["absorbed"]
    return total


def _multiplier(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise MethodError(f"multiplier must be a positive number (the start relevance), got {value!r}")
    return float(value)


@register_method("backtrace", family="backtrace", cost="moderate")
def backtrace(adapter: ModelAdapter, x: Tensor, target: Any, multiplier: float = 1.0) -> Explanation:
    """DLBacktrace (Sankarapu et al. 2024): relevance by contribution magnitude through every node; no baseline."""
    return attribute(adapter, x, target, _multiplier(multiplier), contrastive=False)


@register_method("backtrace_contrastive", family="backtrace", cost="moderate")
def backtrace_contrastive(
    adapter: ModelAdapter, x: Tensor, target: Any, multiplier: float = 1.0
) -> Explanation:
    """DLBacktrace, contrastive: target stream minus the other classes' stream (both in extras)."""
    return attribute(adapter, x, target, _multiplier(multiplier), contrastive=True)
