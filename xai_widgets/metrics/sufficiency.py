"""Key information sufficiency: does the model still decide the same from only the pixels a map ranks highest?

For k in a few percentages, keep the top k% pixels of a map (ranked by Σ_c |a_c| for pixel maps, |a| for
single-channel maps), replace every other pixel by a baseline (zeros in model-input space, or a blurred
copy of the image), and record whether the prediction survives and the ratio p(target | kept) / p(target | x).
Two controls sit beside it (Zheng, Sang and Xu 2025 use this contrast): a random mask of the same size, and
the image's edge map (Sobel magnitude, ``skimage.filters.sobel``). A map that is no more sufficient than the
edge map shows the input, not the decision.

The model is evaluated as it is passed (inside ``adapter.using_params`` that means the substituted weights);
the sanity widget measures every map against the trained model, whose decision it explains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from skimage.filters import sobel
from torch import Tensor, nn

from ..errors import InputError
from ..explanation import Explanation
from ..model import ModelAdapter, Target, as_adapter, gradients_enabled


@dataclass
class Curve:
    """One sufficiency curve: ``survived`` (N×K bool) and ``ratio`` (N×K) at the kept percentages ``ks``."""

    ks: tuple[float, ...]
    survived: Tensor
    ratio: Tensor

    @property
    def survival(self) -> Tensor:
        """Share of samples whose prediction survives, per k."""
        return self.survived.double().mean(0)

    @property
    def mean_ratio(self) -> Tensor:
        """Mean probability ratio per k."""
        return self.ratio.mean(0)

    @property
    def mean(self) -> float:
        """The curve's mean survival over the ks (the single number shown beside a map)."""
        return float(self.survival.mean())


@dataclass
class Sufficiency:
    """The map's curve and its controls (``random``, ``edge``; None when not computed)."""

    map: Curve
    random: Curve | None = None
    edge: Curve | None = None

    def summary(self) -> dict[str, float]:
        """Mean survival and mean probability ratio of the map and each control."""
        out = {}
        for name in ("map", "random", "edge"):
            curve = getattr(self, name)
            if curve is not None:
                out[f"{name}_survival"] = curve.mean
                out[f"{name}_ratio"] = float(curve.mean_ratio.mean())
        return out

    def table(self) -> pd.DataFrame:
        """One row per curve and k: ``curve``, ``k``, ``survival``, ``ratio``."""
        rows = []
        for name in ("map", "random", "edge"):
            curve = getattr(self, name)
            if curve is None:
                continue
            for i, k in enumerate(curve.ks):
                rows.append(
                    {
                        "curve": name,
                        "k": k,
                        "survival": float(curve.survival[i]),
                        "ratio": float(curve.mean_ratio[i]),
                    }
                )
        return pd.DataFrame(rows)


def _pixel_scores(maps: Explanation | Tensor, shape: torch.Size) -> Tensor:
    if isinstance(maps, Explanation):
        maps = maps.pixel if maps.pixel is not None else maps.attribution
    if not isinstance(maps, Tensor):
        raise InputError(f"the map must be an Explanation or a tensor, got {type(maps).__name__}")
    maps = maps.detach().float()
    if maps.ndim == 4:
        maps = maps.abs().sum(1)
    elif maps.ndim == 3:
        maps = maps.abs()
    else:
        raise InputError(f"the map must be N×H×W or N×C×H×W, got shape {tuple(maps.shape)}")
    if maps.shape[0] != shape[0] or maps.shape[1:] != shape[2:]:
        raise InputError(
            f"the map of shape {tuple(maps.shape)} does not match the input of shape {tuple(shape)}"
        )
    return maps


def edge_map(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of each image, summed over channels (N×H×W, on x's device)."""
    images = x.detach().cpu().double().numpy()
    edges = np.stack([sum(sobel(channel) for channel in image) for image in images])
    return torch.from_numpy(edges).to(x.device, torch.float32)


def _blur(x: Tensor) -> Tensor:
    import torchvision.transforms.functional as TF

    sigma = max(x.shape[-2:]) / 16.0
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * (min(x.shape[-2:]) // 2) - 1)
    return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def _baseline(x: Tensor, baseline: str | float | Tensor) -> Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "blur":
            return _blur(x)
        raise InputError(f"baseline must be 'zero', 'blur', a number or a tensor, got {baseline!r}")
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(x).expand_as(x)
        except RuntimeError as error:
            raise InputError(
                f"baseline of shape {tuple(baseline.shape)} does not match x {tuple(x.shape)}"
            ) from error
    raise InputError(f"baseline must be 'zero', 'blur', a number or a tensor, got {type(baseline).__name__}")


def _keep_masks(scores: Tensor, ks: Sequence[float], generator: torch.Generator) -> Tensor:
    """N×K×H×W boolean masks of the top k% pixels; ties broken at random (seeded)."""
    n, h, w = scores.shape
    flat = scores.reshape(n, -1)
    shuffle = torch.stack([torch.randperm(h * w, generator=generator) for _ in range(n)]).to(flat.device)
    order = torch.argsort(torch.gather(flat, 1, shuffle), dim=1, descending=True, stable=True)
    order = torch.gather(shuffle, 1, order)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=flat.device).expand(n, -1))
    counts = torch.tensor([max(1, round(k / 100.0 * h * w)) for k in ks], device=flat.device)
    return (ranks.unsqueeze(1) < counts.view(1, -1, 1)).reshape(n, len(ks), h, w)


def _curve(
    adapter: ModelAdapter,
    x: Tensor,
    base: Tensor,
    scores: Tensor,
    ks: tuple[float, ...],
    prediction: Tensor,
    target: Tensor,
    p_full: Tensor,
    generator: torch.Generator,
    batch_size: int,
) -> Curve:
    masks = _keep_masks(scores, ks, generator).unsqueeze(2)
    n, k = masks.shape[:2]
    kept = torch.where(masks, x.unsqueeze(1), base.unsqueeze(1)).reshape(n * k, *x.shape[1:])
    probs = torch.cat(
        [
            torch.softmax(adapter.logits(kept[i : i + batch_size]).float(), 1)
            for i in range(0, n * k, batch_size)
        ]
    )
    probs = probs.view(n, k, -1)
    survived = probs.argmax(2) == prediction.view(-1, 1)
    ratio = probs.gather(2, target.view(-1, 1, 1).expand(n, k, 1)).squeeze(2) / p_full.view(-1, 1).clamp_min(
        1e-30
    )
    return Curve(ks, survived.cpu(), ratio.double().cpu())


@gradients_enabled()
def sufficiency(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    explanation: Explanation | Tensor,
    target: Target = None,
    ks: Sequence[float] = (5, 10, 20, 30, 50),
    baseline: str | float | Tensor = "zero",
    controls: bool = True,
    seed: int = 0,
    batch_size: int = 64,
) -> Sufficiency:
    """Key information sufficiency of a map and of its random-mask and edge-map controls.

    Args:
        model: the model (or adapter) whose decision must survive.
        x: model input N×C×H×W.
        explanation: an Explanation or an N×H×W / N×C×H×W map for ``x``.
        target: the class whose probability ratio is recorded; default: the Explanation's, else the prediction.
        ks: percentages of pixels kept.
        baseline: ``zero`` (model-input zeros), ``blur`` (Gaussian blur, σ = side/16), a number or a tensor.
        controls: also compute the random-mask and edge-map curves.
        seed: seeds the random mask and the tie-breaking among equal map values.
        batch_size: images per forward.

    Returns:
        A :class:`Sufficiency`: ``survived`` means the masked image keeps the prediction on ``x``.
    """
    adapter = as_adapter(model)
    x = adapter.prepare(x)
    ks = tuple(float(k) for k in ks)
    if not ks or any(not 0 < k <= 100 for k in ks):
        raise InputError(f"ks must be percentages in (0, 100], got {ks!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    scores = _pixel_scores(explanation, x.shape).to(x.device)
    if target is None and isinstance(explanation, Explanation) and explanation.target is not None:
        target = explanation.target
    probs = torch.softmax(adapter.logits(x).float(), 1)
    prediction = probs.argmax(1)
    target = prediction if target is None else adapter.resolve_target(target, logits=probs)
    if callable(target) and not isinstance(target, Tensor):
        raise InputError("sufficiency needs class indices as target (not a callable)")
    p_full = probs.gather(1, target.view(-1, 1)).squeeze(1)
    base = _baseline(x, baseline)
    generator = torch.Generator().manual_seed(seed)
    args = (ks, prediction, target, p_full, generator, batch_size)
    result = Sufficiency(_curve(adapter, x, base, scores, *args))
    if controls:
        noise = torch.rand(scores.shape, generator=generator).to(x.device)
        result.random = _curve(adapter, x, base, noise, *args)
        result.edge = _curve(adapter, x, base, edge_map(x), *args)
    return result
