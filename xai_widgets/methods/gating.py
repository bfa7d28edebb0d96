"""Relevance through an elementwise gate, y = x ⊙ g: squeeze-excitation (Hu et al. 2018), GLU, LSTM gates.

A product of two activations has no additive decomposition, so neither LRP nor DLBacktrace can split it by
contributions. The gate g (a sigmoid or hard-sigmoid of a side branch, usually broadcast over the spatial
positions) scales the signal x rather than adding to it, so the rule is a share of the output relevance:

    R_x = (1 − s) · R,   R_g = Σ_broadcast s · R,   s ∈ [0, 1].

- ``share=0``, *signal-take-all* (Arras et al. 2017, "Explaining recurrent neural network predictions in
  sentiment analysis", for LSTM gates): all relevance stays with the signal; the gate's branch gets none. It
  is DLBacktrace's rule here, and LRP's recommended one for gates.
- ``share=0.5``, the *uniform* rule of AttnLRP (Achtibat et al. 2024) for elementwise products of two
  activations.

Both conserve Σ R exactly. :func:`gate_operands` decides which operand is the gate: the broadcast one when the
shapes differ (an N×C×1×1 squeeze-excitation scale against an N×C×H×W map), otherwise the one a rule marked as
a gate output (the result of a sigmoid-like activation); None when it cannot tell.

LRP uses it in :class:`~.transformer_rules.TransformerRules` (share 0 for a recognised gate, 0.5 otherwise),
DLBacktrace in :mod:`.backtrace`.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import torch
from torch import Tensor

Record = Callable[[Tensor, Tensor, Tensor], None]


class _GateProduct(torch.autograd.Function):
    """y = signal ⊙ gate; the backward splits R by ``share`` instead of differentiating the product."""

    @staticmethod
    def forward(ctx: Any, signal: Tensor, gate: Tensor, share: float, record: Record | None) -> Tensor:
        ctx.share, ctx.record = share, record
        ctx.shapes = (signal.shape, gate.shape)
        return signal * gate

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        signal_shape, gate_shape = ctx.shapes
        share = ctx.share
        r_signal = (relevance * (1.0 - share) if share else relevance).sum_to_size(signal_shape)
        r_gate = (relevance * share).sum_to_size(gate_shape) if share else relevance.new_zeros(gate_shape)
        if ctx.record is not None:
            ctx.record(relevance, r_signal, r_gate)
        return r_signal, r_gate, None, None


def gate_multiply(signal: Tensor, gate: Tensor, share: float = 0.0, record: Record | None = None) -> Tensor:
    """``signal * gate`` whose backward sends (1 − share)·R to the signal and share·R to the gate.

    ``record(R, R_signal, R_gate)``, if given, is called in the backward (for a ledger).
    """
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share!r}")
    return _GateProduct.apply(signal, gate, float(share), record)


def gate_operands(a: Tensor, b: Tensor, gates: Container[int] = ()) -> tuple[Tensor, Tensor] | None:
    """(signal, gate) of the product ``a * b``, or None when neither operand is recognisably the gate.

    The gate is the operand broadcast against the other (fewer elements, same number of dimensions or fewer)
    or, for equal shapes, the one whose ``id`` is in ``gates`` (outputs of sigmoid-like activations).
    """
    shape = torch.broadcast_shapes(a.shape, b.shape)
    a_full, b_full = tuple(a.shape) == tuple(shape), tuple(b.shape) == tuple(shape)
    if a_full and not b_full:
        return a, b
    if b_full and not a_full:
        return b, a
    if a_full and b_full:
        a_gate, b_gate = id(a) in gates, id(b) in gates
        if b_gate and not a_gate:
            return a, b
        if a_gate and not b_gate:
            return b, a
    return None
