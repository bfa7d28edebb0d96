"""Similarity of two explanation maps, as in the sanity checks of Adebayo et al. (NeurIPS 2018).

Preprocessing follows the paper's code: the *absolute* map is the per-pixel sum of |attribution| over
channels, clipped at its 99th percentile and scaled to [0, 1] (``(a - min) / (p99 - min)``); the *signed*
map is the sum over channels. Metrics, one value per sample:

- ``spearman_abs``: Spearman rank correlation of the absolute maps (ties get their average rank, as in
  ``scipy.stats.spearmanr``; the ranks are computed on the maps' device for the whole batch);
- ``spearman``: Spearman rank correlation of the signed maps;
- ``ssim``: structural similarity of the absolute maps (``skimage.metrics.structural_similarity``);
- ``hog``: Pearson correlation of the HOG descriptors of the absolute maps (``skimage.feature.hog``);
- ``pearson`` and ``mse`` of the absolute maps, for completeness.

A correlation with a constant map (e.g. a Grad-CAM that became all zero) is undefined; it is reported as
1 when both maps are equal and 0 otherwise, so curves stay finite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import Tensor

from ..errors import InputError
from ..explanation import Explanation

MapLike = Explanation | Tensor | np.ndarray


def _as_tensor(maps: MapLike) -> Tensor:
    if isinstance(maps, Explanation):
        maps = maps.pixel if maps.pixel is not None else maps.attribution
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(maps)
    if not isinstance(maps, Tensor):
        raise InputError(f"a map must be an Explanation, a tensor or an array, got {type(maps).__name__}")
    if maps.ndim == 2:
        maps = maps.unsqueeze(0)
    if maps.ndim not in (3, 4):
        raise InputError(f"maps must be N×H×W or N×C×H×W, got shape {tuple(maps.shape)}")
    return maps.detach().float()


def abs_map(maps: MapLike, percentile: float = 99.0) -> Tensor:
    """Adebayo et al.'s absolute map: Σ_c |a_c|, clipped at its ``percentile`` and scaled to [0, 1] (N×H×W)."""
    maps = _as_tensor(maps)
    if maps.ndim == 4:
        maps = maps.abs().sum(1)
    else:
        maps = maps.abs()
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.amin(1, keepdim=True)
    high = torch.quantile(flat, percentile / 100.0, dim=1, keepdim=True)
    high = torch.where(high > low, high, flat.amax(1, keepdim=True))
    scaled = ((flat - low) / (high - low).clamp_min(1e-30)).clamp(0, 1)
    return scaled.reshape(maps.shape)


def signed_map(maps: MapLike) -> Tensor:
    """The signed map: the sum over channels of a pixel map (N×H×W)."""
    maps = _as_tensor(maps)
    return maps.sum(1) if maps.ndim == 4 else maps


def rank(values: Tensor) -> Tensor:
    """Row-wise ranks (1..M) of an N×M tensor; tied values share their average rank. On the input's device."""
    n, m = values.shape
    order = torch.argsort(values, dim=1, stable=True)
    ordered = torch.gather(values, 1, order)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = torch.cumsum(new_group.reshape(-1), 0) - 1
    position = torch.arange(m, device=values.device, dtype=torch.float64).repeat(n)
    count = int(group[-1]) + 1
    first = torch.full((count,), float("inf"), device=values.device, dtype=torch.float64)
    last = torch.full((count,), -1.0, device=values.device, dtype=torch.float64)
    first = first.scatter_reduce(0, group, position, reduce="amin")
    last = last.scatter_reduce(0, group, position, reduce="amax")
    average = ((first + last) / 2 + 1)[group].reshape(n, m)
    ranks = torch.empty_like(average)
    ranks.scatter_(1, order, average)
    return ranks


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation; 1 for equal constant rows, 0 when only one side is constant."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    scale = torch.maximum(na, nb).clamp_min(1e-300)
    degenerate = (na <= 1e-12 * scale) | (nb <= 1e-12 * scale)
    r = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    both_flat = (na <= 1e-12 * scale) & (nb <= 1e-12 * scale)
    return torch.where(degenerate, both_flat.double(), r.clamp(-1, 1))


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per sample of two N×H×W (or N×M) batches, with average ranks for ties."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return _pearson_rows(rank(a), rank(b))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per sample."""
    return _pearson_rows(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity per sample of maps in [0, 1] (scikit-image, Gaussian-free 7×7 windows)."""
    a_np, b_np = a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    side = min(a_np.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    values = [structural_similarity(p, q, data_range=1.0, win_size=window) for p, q in zip(a_np, b_np)]
    return torch.tensor(values, dtype=torch.float64)


def hog_descriptor(maps: Tensor, cells: int = 8) -> np.ndarray:
    """HOG descriptors of N×H×W maps: 9 orientations, an image split into about ``cells``×``cells`` cells
    (8×8 px cells at 64×64), 2×2-cell blocks, L2-Hys block norm (scikit-image defaults otherwise)."""
    maps_np = maps.detach().cpu().double().numpy()
    pixels = max(2, min(maps_np.shape[-2:]) // cells)
    return np.stack(
        [hog(m, orientations=9, pixels_per_cell=(pixels, pixels), cells_per_block=(2, 2)) for m in maps_np]
    )


def hog_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the HOG descriptors of two batches of maps, per sample."""
    return _pearson_rows(torch.from_numpy(hog_descriptor(a)), torch.from_numpy(hog_descriptor(b)))


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return ((a.double() - b.double()) ** 2).reshape(a.shape[0], -1).mean(1)


METRICS: dict[str, tuple[str, Callable[[Tensor, Tensor], Tensor]]] = {
    "spearman_abs": ("abs", spearman),
    "spearman": ("signed", spearman),
    "ssim": ("abs", ssim),
    "hog": ("abs", hog_similarity),
    "pearson": ("abs", pearson),
    "mse": ("abs", _mse),
}


def compare(
    original: MapLike,
    other: MapLike,
    metrics: Sequence[str] = ("spearman_abs", "spearman", "ssim", "hog"),
    percentile: float = 99.0,
) -> dict[str, Tensor]:
    """Similarity of two batches of maps (Explanation, N×H×W or N×C×H×W): ``{metric: N values}``.

    The absolute maps follow Adebayo et al.'s preprocessing (see :func:`abs_map`); ``spearman`` uses the
    signed maps. Values come back as float64 on the CPU.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    first, second = _as_tensor(original), _as_tensor(other)
    if first.shape[0] != second.shape[0] or first.shape[-2:] != second.shape[-2:]:
        raise InputError(f"maps of shapes {tuple(first.shape)} and {tuple(second.shape)} cannot be compared")
    prepared: dict[str, tuple[Tensor, Tensor]] = {}
    out = {}
    for metric in metrics:
        kind, fn = METRICS[metric]
        if kind not in prepared:
            prepare = abs_map if kind == "abs" else signed_map
            args = (percentile,) if kind == "abs" else ()
            prepared[kind] = (prepare(first, *args), prepare(second.to(first.device), *args))
        out[metric] = fn(*prepared[kind]).double().cpu()
    return out
