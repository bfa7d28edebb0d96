"""ROAD: Remove And Debias (Rong et al. 2022), and CAManim's layer score ybROAD.

For a map and a percentile p, ROAD removes the p% most relevant pixels (MoRF) or the p% least relevant
(LeRF), fills them by **noisy linear imputation** and reads the target's softmax probability C on the filled
image. A faithful map makes MoRF drop the probability fast and LeRF keep it.

Noisy linear imputation (Rong et al. 2022, section 4): every removed pixel takes the weighted mean of its
in-image 8-neighbours, weight 1/6 for the 4 direct and 1/12 for the 4 diagonal ones, the weights renormalised
by their sum where the image border cuts neighbours off:

    (Σ_j w_ij) v_i − Σ_{j removed} w_ij v_j = Σ_{j kept} w_ij u_j      for every removed pixel i,

one sparse linear system over all removed pixels of an image (per channel, shared matrix), the same system
as the authors' reference code. Then Gaussian noise of standard deviation ``noise`` (0.01, in the model's
normalised input units) is added to the removed pixels only. The noise field of each image is drawn once from
``seed`` and shared by every map, percentile and order (common random numbers: layers are compared on the
same noise, and batching cannot change a result).

ybROAD (Kaczmarek et al. 2023, CAManim): ybROAD = mean over p ∈ {20, 40, 60, 80} of
(C_LeRF(p) − C_MoRF(p)) / 2; higher is more faithful. Pixels are ranked by the map with ties broken by a seeded random permutation
(never by position).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor, nn

from ..errors import InputError, MethodError, TargetError
from ..model import ModelAdapter, Target, as_adapter

Progress = Callable[[int, int], None] | None

#: (row offset, column offset) → weight of a neighbour in the imputation (Rong et al. 2022).
NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)
ORDERS = ("morf", "lerf")


# ------------------------------------------------------------------------------------------ imputation
def _solve_direct(x: Tensor, removed: Tensor) -> Tensor:
    """The imputation system of all images at once (block diagonal), solved exactly by scipy's SuperLU."""
    b, c, h, w = x.shape
    mask = removed.detach().cpu().numpy().reshape(-1)
    where = np.flatnonzero(mask)
    n = where.size
    values = x.detach().cpu().double().numpy().transpose(0, 2, 3, 1).reshape(-1, c)
    unknown = np.full(mask.size, -1, dtype=np.int64)
    unknown[where] = np.arange(n)
    image, pixel = np.divmod(where, h * w)
    row, col = np.divmod(pixel, w)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, c))
    rows, cols, data = [np.arange(n)], [np.arange(n)], []
    ids = np.arange(n)
    for dr, dc, weight in NEIGHBOURS:
        r, k = row + dr, col + dc
        inside = (r >= 0) & (r < h) & (k >= 0) & (k < w)
        source = ids[inside]
        neighbour = image[inside] * h * w + r[inside] * w + k[inside]
        diagonal[source] += weight
        free = unknown[neighbour] >= 0
        rows.append(source[free])
        cols.append(unknown[neighbour[free]])
        data.append(np.full(int(free.sum()), -weight))
        rhs[source[~free]] += weight * values[neighbour[~free]]
    matrix = coo_matrix(
        (np.concatenate([diagonal, *data]), (np.concatenate(rows), np.concatenate(cols))), (n, n)
    )
    solution = spsolve(matrix.tocsc(), rhs).reshape(n, c)
    out = torch.zeros((b * h * w, c), dtype=torch.float64)
    out[torch.from_numpy(where)] = torch.from_numpy(solution)
    return out.view(b, h, w, c).permute(0, 3, 1, 2).to(x)


def _neighbour_kernel(device: torch.device, dtype: torch.dtype) -> Tensor:
    kernel = torch.zeros(3, 3, device=device, dtype=dtype)
    for dr, dc, weight in NEIGHBOURS:
        kernel[1 + dr, 1 + dc] = weight
    return kernel.view(1, 1, 3, 3)


def _solve_cg(x: Tensor, removed: Tensor, tol: float = 1e-8, max_iter: int | None = None) -> Tensor:
    """The same system solved on x's device by conjugate gradients, batched over images and channels.

    The matrix is symmetric and positive definite on the removed pixels (each component of removed pixels
    touches a kept one when p < 100), so CG converges to the direct solution; the 3×3 neighbour sums are one
    depthwise convolution. It runs in float64 (float32 stalls near 1e-4) until every relative residual is
    below ``tol``: a few hundred iterations for a 224×224 image with 80% removed.
    """
    b, c, h, w = x.shape
    values = x.double()
    kernel = _neighbour_kernel(x.device, torch.float64)
    r_mask = removed.double().unsqueeze(1)

    def neighbours(v: Tensor) -> Tensor:
        return F.conv2d(v.reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)

    diagonal = F.conv2d(torch.ones(1, 1, h, w, device=x.device, dtype=torch.float64), kernel, padding=1)

    def apply(v: Tensor) -> Tensor:
        return r_mask * (diagonal * v - neighbours(r_mask * v))

    rhs = r_mask * neighbours((1 - r_mask) * values)
    solution = torch.zeros_like(values)
    residual = rhs.clone()
    direction = residual.clone()
    norm = (residual * residual).sum((2, 3), keepdim=True)
    target = tol**2 * (rhs * rhs).sum((2, 3), keepdim=True).clamp_min(1e-300)
    for _ in range(max_iter or 10 * (h + w)):
        if bool((norm <= target).all()):
            break
        product = apply(direction)
        step = norm / (direction * product).sum((2, 3), keepdim=True).clamp_min(1e-300)
        solution = solution + step * direction
        residual = residual - step * product
        new_norm = (residual * residual).sum((2, 3), keepdim=True)
        direction = residual + (new_norm / norm.clamp_min(1e-300)) * direction
        norm = new_norm
    return solution.to(x.dtype)


def noisy_linear_imputation(
    x: Tensor,
    removed: Tensor,
    noise: float = 0.01,
    noise_field: Tensor | None = None,
    seed: int = 0,
    solver: str = "auto",
) -> Tensor:
    """Fill the ``removed`` pixels of ``x`` (B×C×H×W) by noisy linear imputation (see the module docstring).

    Args:
        x: images in the model's input units.
        removed: B×H×W bool, True where a pixel is removed (all its channels).
        noise: standard deviation of the Gaussian noise added to the filled pixels (0 for none).
        noise_field: B×C×H×W standard normal draws to use (default: drawn from ``seed`` on the CPU).
        solver: ``"direct"`` (scipy SuperLU, CPU), ``"cg"`` (conjugate gradients on x's device) or
            ``"auto"`` (direct on the CPU, CG on an accelerator).

    Kept pixels are returned unchanged, bit for bit.
    """
    if x.ndim != 4 or removed.shape != (x.shape[0], *x.shape[2:]):
        raise InputError(
            f"need x of shape B×C×H×W and removed of shape B×H×W, got {tuple(x.shape)} and {tuple(removed.shape)}"
        )
    removed = removed.to(x.device, torch.bool)
    keep_all = removed.flatten(1).all(1)
    if bool(keep_all.any()):
        raise InputError("every pixel of an image is removed: the imputation has no pixel to start from")
    if solver == "auto":
        solver = "direct" if x.device.type == "cpu" else "cg"
    if solver == "direct":
        filled = _solve_direct(x, removed)
    elif solver == "cg":
        filled = _solve_cg(x, removed)
    else:
        raise MethodError(f"unknown solver {solver!r}; use 'auto', 'direct' or 'cg'")
    if noise:
        if noise_field is None:
            generator = torch.Generator().manual_seed(seed)
            noise_field = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        filled = filled + noise * noise_field.to(filled)
    return torch.where(removed.unsqueeze(1), filled, x)


# ----------------------------------------------------------------------------------------------- ROAD
def pixel_ranks(maps: Tensor, seed: int = 0) -> Tensor:
    """Rank (0 = least relevant) of every pixel of each map (…×H×W → …×H·W), ties broken by a seeded
    random permutation of the positions."""
    flat = maps.detach().flatten(-2)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(flat.shape[-1], generator=generator).to(flat.device)
    order = perm[torch.argsort(flat[..., perm], dim=-1, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(flat.shape[-1], device=flat.device).expand_as(order))
    return ranks


def removal_mask(ranks: Tensor, percentile: float, order: str, shape: Sequence[int]) -> Tensor:
    """Pixels removed at ``percentile`` (round(p/100 · H·W) of them) for MoRF or LeRF, from the ranks."""
    total = ranks.shape[-1]
    count = int(round(percentile / 100 * total))
    removed = ranks >= total - count if order == "morf" else ranks < count
    return removed.view(*ranks.shape[:-1], *shape)


def _check(percentiles: Sequence[float], orders: Sequence[str], batch_size: int) -> tuple[float, ...]:
    percentiles = tuple(float(p) for p in percentiles)
    if not percentiles or any(not 0 < p < 100 for p in percentiles):
        raise InputError(f"percentiles must lie strictly between 0 and 100, got {percentiles}")
    bad = [o for o in orders if o not in ORDERS]
    if bad:
        raise InputError(
            f"unknown order {bad[0]!r}; use 'morf' (most relevant first) or 'lerf' (least relevant first)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    return percentiles


def _probabilities(
    adapter: ModelAdapter,
    x: Tensor,
    maps: Tensor,
    target: Target,
    percentiles: Sequence[float],
    orders: Sequence[str],
    noise: float,
    seed: int,
    batch_size: int,
    solver: str,
    progress: Progress,
) -> Tensor:
    """Target probabilities for every (map, sample, order, percentile): M×N×O×P, batched on the device."""
    percentiles = _check(percentiles, orders, batch_size)
    x = adapter.prepare(x)
    n, _, h, w = x.shape
    if not isinstance(maps, Tensor) or maps.ndim < 3 or maps.shape[-3] != n:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise InputError(f"maps must be N×H×W or M×N×H×W with N = {n} images, got {shape}")
    maps = maps.detach().to(x.device, x.dtype).reshape(-1, n, *maps.shape[-2:])
    if tuple(maps.shape[-2:]) != (h, w):
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    with adapter.evaluating():
        target = adapter.resolve_target(target, x)
    if not isinstance(target, Tensor):
        raise TargetError("ROAD measures a class probability: give class indices (or None), not a callable")
    m = maps.shape[0]
    ranks = pixel_ranks(maps, seed)
    noise_field = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(
        x.device
    )
    items = [
        (i, j, k, q)
        for i in range(m)
        for j in range(n)
        for k in range(len(orders))
        for q in range(len(percentiles))
    ]
    out = torch.empty(len(items), device=x.device, dtype=x.dtype)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        sample = torch.tensor([j for _, j, _, _ in chunk], device=x.device)
        removed = torch.stack(
            [removal_mask(ranks[i, j], percentiles[q], orders[k], (h, w)) for i, j, k, q in chunk]
        )
        images = noisy_linear_imputation(x[sample], removed, noise, noise_field[sample], solver=solver)
        with torch.no_grad(), adapter.evaluating():
            probabilities = torch.softmax(adapter.forward(images), dim=1)
        out[start : start + len(chunk)] = probabilities.gather(1, target[sample].view(-1, 1)).squeeze(1)
        if progress is not None:
            progress(start + len(chunk), len(items))
    return out.view(m, n, len(orders), len(percentiles))


def road(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    percentiles: Sequence[float] = (20, 40, 60, 80),
    order: str = "morf",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 64,
    solver: str = "auto",
    progress: Progress = None,
) -> Tensor:
    """ROAD curve (Rong et al. 2022): the target's softmax probability after removing, for each percentile,
    the most (``order="morf"``) or least (``"lerf"``) relevant pixels of each map and filling them by noisy
    linear imputation (module docstring).

    Args:
        model: an ``nn.Module`` or ModelAdapter; x: model input N×C×H×W.
        maps: N×H×W (or M×N×H×W, e.g. one per layer) relevance maps; resized bilinearly to H×W if needed.
        target: class indices (None: the predicted class).
        batch_size: imputed images per model call; progress(done, total) per chunk.

    Returns:
        Probabilities of shape ``maps.shape[:-2] + (P,)``.
    """
    adapter = as_adapter(model)
    probs = _probabilities(
        adapter, x, maps, target, percentiles, (order,), noise, seed, batch_size, solver, progress
    )
    return probs[:, :, 0].reshape(*maps.shape[:-2], probs.shape[-1])


@dataclass
class ROADScores:
    """ybROAD per map: ``score`` has ``maps.shape[:-2]``; ``morf``/``lerf`` add a percentile axis."""

    score: Tensor
    morf: Tensor
    lerf: Tensor
    percentiles: tuple[float, ...]


def ybroad(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    percentiles: Sequence[float] = (20, 40, 60, 80),
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 64,
    solver: str = "auto",
    progress: Progress = None,
) -> ROADScores:
    """ybROAD (CAManim): mean over percentiles of (C_LeRF(p) − C_MoRF(p)) / 2, with MoRF and LeRF of all
    maps, samples and percentiles in one batched run. Higher means the map is more faithful."""
    adapter = as_adapter(model)
    probs = _probabilities(
        adapter, x, maps, target, percentiles, ORDERS, noise, seed, batch_size, solver, progress
    )
    lead = maps.shape[:-2]
    morf = probs[:, :, 0].reshape(*lead, probs.shape[-1])
    lerf = probs[:, :, 1].reshape(*lead, probs.shape[-1])
    return ROADScores(((lerf - morf) / 2).mean(-1), morf, lerf, _check(percentiles, ORDERS, batch_size))
