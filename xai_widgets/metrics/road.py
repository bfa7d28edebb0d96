"""ROAD: Remove And Debias (Rong et al. 2022), and CAManim's layer score ybROAD.

For a map and a percentile p, ROAD removes the p% most relevant pixels (MoRF) or the p% least relevant
(LeRF), fills them by **noisy linear imputation** and reads the target's softmax probability C on the filled
image. A faithful map makes MoRF drop the probability fast and LeRF keep it.

Noisy linear imputation (Rong et al. 2022, section 4): every removed pixel takes the weighted mean of its
in-image 8-neighbours, weight 1/6 for the 4 direct and 1/12 for the 4 diagonal ones, the weights renormalised
by their sum where the image border cuts neighbours off:

    (Σ_j w_ij) v_i − Σ_{j removed} w_ij v_j = Σ_{j kept} w_ij u_j      for every removed pixel i,

one sparse linear system over all removed pixels of an image (per channel, shared matrix), the same system
as the authors' reference code. It is solved on the model's device for a whole batch of images and masks at
once by conjugate gradients preconditioned with a geometric multigrid V-cycle (about ten iterations at any
image size; the stencil is eight shifted adds), or exactly by scipy's sparse LU (``solver="direct"``, the
reference the batched solver is tested against: within 1e-4 in float32, 1e-9 in float64). Then Gaussian noise of standard deviation ``noise`` (0.01, in the model's
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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor, nn

from ..errors import InputError, MethodError, TargetError
from ..model import ModelAdapter, Target, as_adapter, gradients_enabled

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


def _kernel(v: Tensor) -> Tensor:
    """The 3×3 stencil [1 2 1]ᵀ[1 2 1] with zeros outside the image, as two 3-tap passes of shifted in-place
    adds (the single-channel CPU path of a 3×3 convolution is slow, and padding costs a fill and a copy)."""
    row = v * 2
    row[..., :, 1:] += v[..., :, :-1]
    row[..., :, :-1] += v[..., :, 1:]
    out = row * 2
    out[..., 1:, :] += row[..., :-1, :]
    out[..., :-1, :] += row[..., 1:, :]
    return out


def _neighbour_sum(v: Tensor) -> Tensor:
    """Σ_j w_ij v_j over the in-image 8-neighbours of every pixel (1/6 direct, 1/12 diagonal), zero outside:
    the stencil is (1/12)·[1 2 1]ᵀ[1 2 1] − (4/12)·δ."""
    return _kernel(v).add_(v, alpha=-4).mul_(1 / 12)


class _Grid:
    """One multigrid level: the removed pixels (B×1×H×W, 1.0 where unknown) and the operator on them,
    A v = removed · (D v − Σ_j w_ij v_j) = removed · ((D + 1/3) v − K v / 12), D the in-image weight sum (the
    border renormalisation) and K the [1 2 1]ᵀ[1 2 1] stencil. The per-pixel factors are formed once, so
    applying A or a Jacobi sweep costs the stencil and two fused multiply-adds."""

    def __init__(self, removed: Tensor) -> None:
        self.removed = removed
        diagonal = _neighbour_sum(torch.ones_like(removed[:1]))
        self.inverse = removed / diagonal
        self.centre = removed * (diagonal + 1 / 3)
        self.side = removed * (-1 / 12)
        # a Jacobi sweep e ← e + D⁻¹(r − A e) = (1 − D⁻¹·centre) e + (D⁻¹/12) K e + D⁻¹ r on the removed pixels
        self.keep = 1 - self.inverse * self.centre
        self.spread = self.inverse * (1 / 12)

    def apply(self, v: Tensor) -> Tensor:
        return _kernel(v).mul_(self.side).addcmul_(self.centre, v)

    def smooth(self, e: Tensor, start: Tensor) -> Tensor:
        """One Jacobi sweep on A e = r, given ``start`` = D⁻¹ r (high frequencies shrink by ≥ 3 per sweep)."""
        return _kernel(e).mul_(self.spread).addcmul_(self.keep, e).add_(start)


def _hierarchy(removed: Tensor, coarsest: int = 4) -> list[_Grid]:
    """Levels halving the side down to ``coarsest`` pixels; a coarse pixel is unknown only when all its
    fine pixels are, so a coarse correction never moves a kept pixel."""
    grids = [_Grid(removed)]
    while min(removed.shape[-2:]) > coarsest:
        h, w = removed.shape[-2:]
        if h % 2 or w % 2:  # a missing row or column does not keep a coarse pixel known
            removed = F.pad(removed, (0, w % 2, 0, h % 2), value=1.0)
        coarse = removed[..., 0::2, 0::2] * removed[..., 1::2, 0::2]
        removed = coarse.mul_(removed[..., 0::2, 1::2]).mul_(removed[..., 1::2, 1::2])
        grids.append(_Grid(removed))
    return grids


def _restrict(r: Tensor) -> Tensor:
    """2×2 sums (the side rounded up; the missing row or column counts as 0)."""
    h, w = r.shape[-2:]
    if h % 2 or w % 2:
        r = F.pad(r, (0, w % 2, 0, h % 2))
    out = r[..., 0::2, 0::2] + r[..., 1::2, 0::2]
    return out.add_(r[..., 0::2, 1::2]).add_(r[..., 1::2, 1::2])


def _add_prolonged(e: Tensor, removed: Tensor, c: Tensor) -> Tensor:
    """e + removed · P c, P copying each coarse value to its 2×2 fine pixels (cropped to e's size)."""
    h, w = e.shape[-2:]
    *lead, ch, cw = c.shape
    fine = c[..., :, None, :, None].expand(*lead, ch, 2, cw, 2).reshape(*lead, 2 * ch, 2 * cw)
    return torch.addcmul(e, removed, fine[..., :h, :w])


def _v_cycle(grids: list[_Grid], level: int, r: Tensor, sweeps: int = 2, coarse_sweeps: int = 10) -> Tensor:
    """An approximate solve of A e = r: a symmetric V-cycle (Jacobi smoothing, restriction by 2×2 sums, the
    transpose of the piecewise-constant prolongation), so it is a valid preconditioner for CG."""
    grid = grids[level]
    start = grid.inverse * r
    e = start
    if level == len(grids) - 1:
        for _ in range(coarse_sweeps):
            e = grid.smooth(e, start)
        return e
    for _ in range(sweeps - 1):
        e = grid.smooth(e, start)
    # the stencil at twice the spacing is a quarter of the fine one: the 2×2 sum is restriction and scaling
    coarse = _restrict(grid.apply(e).neg_().add_(r)).mul_(grids[level + 1].removed)
    correction = _v_cycle(grids, level + 1, coarse, sweeps, coarse_sweeps)
    e = _add_prolonged(e, grid.removed, correction)
    for _ in range(sweeps):
        e = grid.smooth(e, start)
    return e


#: images solved together by :func:`_solve_cg`: about this many values per chunk, so that the stencil passes
#: stay in the CPU's cache (a whole batch of 224 px images at once runs 2–3× slower)
CHUNK_VALUES = 1 << 19


def _solve_cg(x: Tensor, removed: Tensor, tol: float | None = None, max_iter: int = 200) -> Tensor:
    """The same system on x's device: conjugate gradients preconditioned by a geometric multigrid V-cycle,
    all channels of an image at once, the images in chunks of about :data:`CHUNK_VALUES` values on the CPU
    (the whole batch at once on a GPU).

    The matrix is symmetric positive definite on the removed pixels (each component of removed pixels
    touches a kept one when p < 100). With the V-cycle, about 10 iterations reach a relative residual of
    ``tol`` at any image size (plain CG needs O(side) iterations: hundreds at 224 px). Each image stops on
    its own residual, so a result does not depend on the other images of its batch. Default ``tol``: 1e-5
    in float32 (the filled values then lie within 1e-4 of the exact solve, a hundredth of the imputation
    noise), 1e-11 in float64.
    """
    if tol is None:
        tol = 1e-11 if x.dtype == torch.float64 else 1e-5
    per_image = x[0].numel()
    chunk = x.shape[0] if x.device.type != "cpu" else max(1, CHUNK_VALUES // per_image)
    if chunk < x.shape[0]:
        parts = [
            _solve_cg(x[i : i + chunk], removed[i : i + chunk], tol, max_iter)
            for i in range(0, x.shape[0], chunk)
        ]
        return torch.cat(parts)
    tiny = torch.finfo(x.dtype).tiny
    grids = _hierarchy(removed.to(x.dtype).unsqueeze(1))
    grid = grids[0]
    rhs = _neighbour_sum((1 - grid.removed) * x).mul_(grid.removed)
    solution = torch.zeros_like(x)
    residual = rhs.clone()
    z = _v_cycle(grids, 0, residual)
    direction = z
    rz = (residual * z).sum((2, 3), keepdim=True)
    target = tol**2 * (rhs * rhs).sum((2, 3), keepdim=True)
    for _ in range(max_iter):
        active = ((residual * residual).sum((2, 3), keepdim=True) > target).to(x.dtype)
        if not bool(active.any()):
            break
        product = grid.apply(direction)
        curvature = (direction * product).sum((2, 3), keepdim=True)
        step = rz / curvature.clamp_min(tiny) * active
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1)
        z = _v_cycle(grids, 0, residual)
        rz_new = (residual * z).sum((2, 3), keepdim=True)
        direction = z.addcmul_(rz_new / rz.clamp_min(tiny), direction)
        rz = rz_new
    return solution


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
        solver: ``"direct"`` (scipy SuperLU on the CPU, the exact reference), ``"cg"`` (multigrid-
            preconditioned conjugate gradients on x's device, batched; within 1e-4 of the exact solve in
            float32) or ``"auto"`` (``"cg"``).

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
        solver = "cg"
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


def _probabilities(*args: Any) -> Tensor:
    """Target probabilities for every (map, sample, order, percentile): M×N×O×P (see :func:`road_outputs`)."""
    return road_outputs(*args)[0]


def road_outputs(
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
    noise_field: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Target probabilities and predicted classes for every (map, sample, order, percentile), both M×N×O×P,
    batched on the device (the predictions give Quantus's ROAD, which counts kept correct predictions).
    ``noise_field`` (N×C×H×W standard normal draws) replaces the field drawn from ``seed``, e.g. one drawn per
    data set index so that a result does not depend on the batch an image travels in."""
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
    if noise_field is None:
        noise_field = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    noise_field = noise_field.to(x.device, x.dtype)
    items = [
        (i, j, k, q)
        for i in range(m)
        for j in range(n)
        for k in range(len(orders))
        for q in range(len(percentiles))
    ]
    out = torch.empty(len(items), device=x.device, dtype=x.dtype)
    predicted = torch.empty(len(items), device=x.device, dtype=torch.long)
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
        predicted[start : start + len(chunk)] = probabilities.argmax(1)
        if progress is not None:
            progress(start + len(chunk), len(items))
    shape = (m, n, len(orders), len(percentiles))
    return out.view(shape), predicted.view(shape)


@gradients_enabled()
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


@gradients_enabled()
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
