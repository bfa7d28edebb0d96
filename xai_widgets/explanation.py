"""The result type every method returns: a signed map at input resolution plus what produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Explanation:
    """One explanation of a batch.

    Attributes:
        attribution: N×H×W signed map at the input's resolution (pixel methods: summed over channels).
        method: the registry name of the method.
        target: N class indices explained (None for a callable target).
        score: N values of the explained quantity (the target logit) on the unmodified model.
        pixel: N×C×H×W per-channel map for pixel methods, else None.
        layer: the layer a CAM-style method used, else None.
        layer_map: N×h×w map at the layer's own resolution, else None.
        options: the options the method ran with.
        extras: method-specific diagnostics (e.g. IG's ``convergence_delta``, LRP's per-layer relevance sums);
            ``extras['degenerate']`` is a short reason when a map carries no picture (all zero, constant or
            non-finite; see :func:`degenerate_reason`), absent otherwise.

    Signed values are kept; normalisation is a display choice (:meth:`normalized`).
    """

    attribution: Tensor
    method: str
    target: Tensor | None
    score: Tensor
    pixel: Tensor | None = None
    layer: str | None = None
    layer_map: Tensor | None = None
    options: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.attribution.shape[0]

    def normalized(self, mode: str = "abs", percentile: float = 99.0) -> Tensor:
        """The map scaled for display: ``abs`` → [0, 1] of |map|; ``signed`` → [-1, 1] symmetric;
        ``minmax`` → [0, 1]. Values beyond the given percentile of |map| are clipped (per sample)."""
        return normalize_map(self.attribution, mode, percentile)

    def cpu(self) -> Explanation:
        """A copy with every tensor on the CPU."""
        move = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return Explanation(**move)


def normalize_map(maps: Tensor, mode: str = "abs", percentile: float = 99.0) -> Tensor:
    """Per-sample display normalisation of N×H×W maps (see :meth:`Explanation.normalized`).

    The scale is each map's own, with no absolute floor, so a map peaking at 1e-15 still reaches 1. Where the
    scale is zero every non-zero value is beyond it (±1) and an all-zero or (``minmax``) constant map gives 0.
    """
    flat = maps.detach().reshape(maps.shape[0], -1).float()
    if mode == "minmax":
        low = flat.min(dim=1, keepdim=True).values
        return _scaled(flat - low, flat.max(dim=1, keepdim=True).values - low).reshape(maps.shape)
    q = percentile / 100.0
    magnitude = flat.abs()
    scale = torch.quantile(magnitude, q, dim=1, keepdim=True) if q < 1 else magnitude.amax(1, keepdim=True)
    if mode == "abs":
        return _scaled(magnitude, scale).clamp(0, 1).reshape(maps.shape)
    if mode == "signed":
        return _scaled(flat, scale).clamp(-1, 1).reshape(maps.shape)
    raise ValueError(f"unknown normalisation mode {mode!r}; use 'abs', 'signed' or 'minmax'")


def _scaled(values: Tensor, scale: Tensor) -> Tensor:
    """values / scale per row; sign(values) where the scale is 0."""
    return torch.where(scale > 0, values / torch.where(scale > 0, scale, 1.0), values.sign())


def degenerate_reason(attribution: Tensor) -> str | None:
    """Why a batch of maps carries no picture, or None when every map is usable.

    Per sample: "all zero", "constant" (max − min within 1e-6 of the map's magnitude, e.g. a CAM at a 1×1
    layer upsampled) or "non-finite" (NaN or ±inf). One sample gives the bare reason; a batch names the
    samples ("sample 1: all zero; sample 3: constant").
    """
    flat = attribution.detach().reshape(attribution.shape[0], -1)
    if flat.shape[1] == 0:
        return "empty"
    finite = torch.isfinite(flat).all(1)
    clean = torch.where(torch.isfinite(flat), flat, 0).float()
    peak = clean.abs().amax(1)
    spread = clean.amax(1) - clean.amin(1)
    reasons = []
    for ok, top, width in zip(finite.tolist(), peak.tolist(), spread.tolist()):
        if not ok:
            reasons.append("non-finite")
        elif top == 0:
            reasons.append("all zero")
        elif width <= 1e-6 * top:
            reasons.append("constant")
        else:
            reasons.append(None)
    if len(reasons) == 1:
        return reasons[0]
    named = [f"sample {i}: {reason}" for i, reason in enumerate(reasons) if reason is not None]
    return "; ".join(named) or None


def flag_degenerate(explanation: Explanation) -> Explanation:
    """Set ``extras['degenerate']`` to :func:`degenerate_reason` of the map (removed when the map is fine)."""
    reason = degenerate_reason(explanation.attribution)
    if reason is None:
        explanation.extras.pop("degenerate", None)
    else:
        explanation.extras["degenerate"] = reason
    return explanation
