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
        extras: method-specific diagnostics (e.g. IG's ``convergence_delta``, LRP's per-layer relevance sums).

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
    """Per-sample display normalisation of N×H×W maps (see :meth:`Explanation.normalized`)."""
    flat = maps.detach().reshape(maps.shape[0], -1).float()
    if mode == "minmax":
        low = flat.min(dim=1, keepdim=True).values
        high = flat.max(dim=1, keepdim=True).values
        return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)
    q = percentile / 100.0
    scale = (
        torch.quantile(flat.abs(), q, dim=1, keepdim=True).clamp_min(1e-12)
        if q < 1
        else flat.abs().amax(1, keepdim=True).clamp_min(1e-12)
    )
    if mode == "abs":
        return (flat.abs() / scale).clamp(0, 1).reshape(maps.shape)
    if mode == "signed":
        return (flat / scale).clamp(-1, 1).reshape(maps.shape)
    raise ValueError(f"unknown normalisation mode {mode!r}; use 'abs', 'signed' or 'minmax'")
