"""Deletion and insertion curves (Petsiuk, Das and Saenko, "RISE", BMVC 2018), with ROAD's debiased fill.

Deletion removes the most relevant pixels first, in ``steps`` equal shares, and records the target's
softmax probability after each share; insertion starts from an image with every pixel removed and puts
back the most relevant pixels first. The area under each curve (trapezoid rule over the removed or
inserted fraction 0..1) summarises it: a faithful map has a **low deletion AUC** and a **high insertion
AUC**.

What fills the removed pixels decides what the curve measures. RISE blurred them (or set them to zero),
which leaks the shape of the removed region into the image (Rong et al. 2022); here the default is ROAD's
noisy linear imputation from the kept pixels (``fill="imputation"``, :mod:`xai_widgets.metrics.road`), with
``fill="blur"`` (a Gaussian blur, σ = side / 16) as the option. With every pixel removed there is nothing
to impute from: that end point is the image's per-channel mean (``imputation``) or the blurred image.
Pixels are ranked with ROAD's seeded tie-breaking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, TargetError
from ..model import ModelAdapter, Target, as_adapter
from .road import noisy_linear_imputation, pixel_ranks
from .sufficiency import _blur

FILLS = ("imputation", "blur")


@dataclass
class RemovalCurves:
    """``deletion`` and ``insertion``: N×(steps+1) target probabilities at ``fractions`` (0 … 1)."""

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor

    @staticmethod
    def _auc(curve: Tensor, fractions: Tensor) -> Tensor:
        return torch.trapezoid(curve, fractions.to(curve), dim=-1)

    @property
    def deletion_auc(self) -> Tensor:
        """Area under each deletion curve (lower is more faithful)."""
        return self._auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> Tensor:
        """Area under each insertion curve (higher is more faithful)."""
        return self._auc(self.insertion, self.fractions)


def deletion_insertion_curves(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    steps: int = 20,
    fill: str = "imputation",
    noise: float = 0.01,
    seed: int = 0,
    noise_field: Tensor | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> RemovalCurves:
    """Deletion and insertion curves of N maps for the model input ``x`` (N×C×H×W).

    Args:
        maps: N×H×W relevance maps (resized bilinearly to the input size when needed).
        target: class indices (None: the predicted class).
        steps: equal shares of pixels removed (inserted) one after the other (20: 5% each).
        fill: ``imputation`` (noisy linear imputation, the default) or ``blur``.
        noise, seed, noise_field: the imputation's noise, as in :func:`~xai_widgets.metrics.road.road`.
        batch_size: perturbed images per model call; progress(done, total) after each call.
    """
    adapter = as_adapter(model)
    x = adapter.prepare(x)
    n, c, h, w = x.shape
    if fill not in FILLS:
        raise InputError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(maps, Tensor) or maps.ndim != 3 or maps.shape[0] != n:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise InputError(f"maps must be N×H×W with N = {n} images, got {shape}")
    maps = maps.detach().to(x.device, x.dtype)
    if tuple(maps.shape[-2:]) != (h, w):
        maps = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    with adapter.evaluating():
        target = adapter.resolve_target(target, x)
    if not isinstance(target, Tensor):
        raise TargetError("deletion and insertion measure a class probability: give class indices (or None)")
    ranks = pixel_ranks(maps, seed)  # 0 = least relevant
    if noise_field is None:
        noise_field = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    noise_field = noise_field.to(x.device, x.dtype)
    empty = x.mean((2, 3), keepdim=True).expand_as(x) if fill == "imputation" else _blur(x)
    total = h * w
    counts = [round(k * total / steps) for k in range(steps + 1)]
    # (sample, curve, step): curve 0 = deletion (the top `count` removed), 1 = insertion (all but the top kept)
    items = [(j, curve, k) for j in range(n) for curve in (0, 1) for k in range(steps + 1)]
    probs = torch.empty(len(items), device=x.device, dtype=x.dtype)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        sample = torch.tensor([j for j, _, _ in chunk], device=x.device)
        removed = torch.stack(
            [
                (ranks[j] >= total - counts[k] if curve == 0 else ranks[j] < total - counts[k]).view(h, w)
                for j, curve, k in chunk
            ]
        )
        images = x[sample]
        every = removed.flatten(1).all(1)
        partial = ~every & removed.flatten(1).any(1)
        if fill == "imputation" and bool(partial.any()):
            filled = noisy_linear_imputation(
                images[partial], removed[partial], noise, noise_field[sample[partial]]
            )
            images = images.clone()
            images[partial] = filled
        elif fill == "blur":
            images = torch.where(removed.unsqueeze(1), empty[sample], images)
        images = torch.where(every.view(-1, 1, 1, 1), empty[sample], images)
        with torch.no_grad(), adapter.evaluating():
            p = torch.softmax(adapter.forward(images), dim=1)
        probs[start : start + len(chunk)] = p.gather(1, target[sample].view(-1, 1)).squeeze(1)
        if progress is not None:
            progress(start + len(chunk), len(items))
    probs = probs.view(n, 2, steps + 1)
    fractions = torch.tensor([count / total for count in counts], dtype=torch.float64)
    return RemovalCurves(fractions, probs[:, 0], probs[:, 1])
