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
once by conjugate gradients preconditioned with a geometric multigrid V-cycle (about nine iterations at any
image size; the stencil is two 3-tap passes of shifted adds; the coarsest level, at most 256 pixels, is solved
by a dense Cholesky factor), or exactly by scipy's sparse LU (``solver="direct"``, the
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


def _three_tap(v: Tensor, out: Tensor, dim: int) -> Tensor:
    """out = the two neighbours of each value along ``dim`` (zero outside the image) + 2 v."""
    n = v.shape[dim]
    if n > 2:
        torch.add(v.narrow(dim, 0, n - 2), v.narrow(dim, 2, n - 2), out=out.narrow(dim, 1, n - 2))
    if n > 1:
        out.select(dim, 0).copy_(v.select(dim, 1))
        out.select(dim, -1).copy_(v.select(dim, n - 2))
    else:
        out.zero_()
    return out.add_(v, alpha=2)


def _kernel(v: Tensor, out: Tensor | None = None, row: Tensor | None = None) -> Tensor:
    """The 3×3 stencil [1 2 1]ᵀ[1 2 1] with zeros outside the image, as two 3-tap passes, four image-sized
    passes in all (the single-channel CPU path of a 3×3 convolution is slow, and padding costs a fill and a
    copy). ``out`` and ``row`` (v's shape) receive the result and the intermediate pass, so a solver's loop
    allocates nothing."""
    row = _three_tap(v, torch.empty_like(v) if row is None else row, -1)
    return _three_tap(row, torch.empty_like(v) if out is None else out, -2)


def _neighbour_sum(v: Tensor) -> Tensor:
    """Σ_j w_ij v_j over the in-image 8-neighbours of every pixel (1/6 direct, 1/12 diagonal), zero outside:
    the stencil is (1/12)·[1 2 1]ᵀ[1 2 1] − (4/12)·δ."""
    return _kernel(v).add_(v, alpha=-4).mul_(1 / 12)


def _diagonals(removed: Tensor) -> tuple[Tensor, Tensor]:
    """D, the in-image weight sum of each pixel (1 inside, less at the border), and A's diagonal on the
    removed pixels, removed · (D + 1/3) (the stencil's own centre weight is 4/12)."""
    diagonal = _neighbour_sum(torch.ones_like(removed[:1]))
    return diagonal, removed * (diagonal + 1 / 3)


class _Grid:
    """One multigrid level: the removed pixels (B×1×H×W, 1.0 where unknown), the operator on them,
    A v = removed · (D v − Σ_j w_ij v_j) = removed · ((D + 1/3) v − K v / 12), D the in-image weight sum (the
    border renormalisation) and K the [1 2 1]ᵀ[1 2 1] stencil, and the level's work buffers (B×C×H×W).

    The per-pixel factors are formed once, so applying A, a residual or a Jacobi sweep costs the stencil's
    four passes and two fused multiply-adds, all written into the level's buffers. Nothing is allocated per
    iteration: on the CPU a fresh image-sized tensor is often a fresh memory map whose page faults cost more
    than the arithmetic."""

    def __init__(self, removed: Tensor, channels: int) -> None:
        self.removed = removed
        diagonal, self.centre = _diagonals(removed)
        self.inverse = removed / diagonal
        self.side = removed * (-1 / 12)
        # a Jacobi sweep e ← e + D⁻¹(r − A e) = (1 − D⁻¹·centre) e + (D⁻¹/12) K e + D⁻¹ r on the removed pixels
        self.keep = 1 - self.inverse * self.centre
        self.spread = self.inverse * (1 / 12)
        b, _, h, w = removed.shape
        self.row, self.start, self.rhs, self.even, self.odd = torch.empty(
            (5, b, channels, h, w), dtype=removed.dtype, device=removed.device
        )

    def apply(self, v: Tensor, out: Tensor) -> Tensor:
        """A v, written to ``out``."""
        return _kernel(v, out, self.row).mul_(self.side).addcmul_(self.centre, v)

    def residual(self, e: Tensor, r: Tensor, out: Tensor) -> Tensor:
        """r − A e, written to ``out``."""
        stencil = _kernel(e, out, self.row)
        return torch.addcmul(r, self.side, stencil, value=-1, out=out).addcmul_(self.centre, e, value=-1)

    def smooth(self, e: Tensor) -> Tensor:
        """One Jacobi sweep on A e = r, given ``self.start`` = D⁻¹ r (high frequencies shrink by ≥ 3 per
        sweep), into whichever of the two sweep buffers ``e`` is not."""
        out = _kernel(e, self.odd if e is self.even else self.even, self.row)
        return torch.addcmul(self.start, self.spread, out, out=out).addcmul_(self.keep, e)


class _Coarsest:
    """The coarsest level, solved exactly: A as a dense matrix per image (kept pixels get an identity row, so
    the matrix is SPD and their value stays 0), factored once by Cholesky. One solve replaces the levels
    below it, whose many tiny operations cost more in dispatch than in arithmetic."""

    def __init__(self, removed: Tensor) -> None:
        self.removed = removed
        b, _, h, w = removed.shape
        n = h * w
        basis = torch.eye(n, dtype=removed.dtype, device=removed.device).view(n, 1, h, w)
        stencil = _kernel(basis).view(n, n)
        mask = removed.view(b, n)
        matrix = (mask[:, :, None] * mask[:, None, :]) * stencil.mul(-1 / 12)
        matrix.diagonal(dim1=1, dim2=2).add_(_diagonals(removed)[1].view(b, n) + (1 - mask))
        self.factor = torch.linalg.cholesky(matrix)

    def solve(self, r: Tensor) -> Tensor:
        """A⁻¹ r (r is zero on the kept pixels)."""
        b, c, h, w = r.shape
        solution = torch.cholesky_solve(r.reshape(b, c, h * w).transpose(1, 2), self.factor)
        return solution.transpose(1, 2).reshape(b, c, h, w)


#: the multigrid's coarsest level has at most this many pixels and is solved directly (14×14 at 224 px)
COARSEST_PIXELS = 256


def _hierarchy(removed: Tensor, channels: int) -> list[_Grid | _Coarsest]:
    """Levels halving the side until at most :data:`COARSEST_PIXELS` remain; a coarse pixel is unknown only
    when all its fine pixels are, so a coarse correction never moves a kept pixel."""
    grids: list[_Grid | _Coarsest] = []
    while removed.shape[-2] * removed.shape[-1] > COARSEST_PIXELS:
        grids.append(_Grid(removed, channels))
        h, w = removed.shape[-2:]
        if h % 2 or w % 2:  # a missing row or column does not keep a coarse pixel known
            removed = F.pad(removed, (0, w % 2, 0, h % 2), value=1.0)
        coarse = removed[..., 0::2, 0::2] * removed[..., 1::2, 0::2]
        removed = coarse.mul_(removed[..., 0::2, 1::2]).mul_(removed[..., 1::2, 1::2])
    grids.append(_Coarsest(removed))
    return grids


def _restrict(r: Tensor, out: Tensor | None = None) -> Tensor:
    """2×2 sums, into ``out`` if given (the side rounded up; the missing row or column counts as 0)."""
    h, w = r.shape[-2:]
    if h % 2 or w % 2:
        r = F.pad(r, (0, w % 2, 0, h % 2))
    out = torch.add(r[..., 0::2, 0::2], r[..., 1::2, 0::2], out=out)
    return out.add_(r[..., 0::2, 1::2]).add_(r[..., 1::2, 1::2])


def _add_prolonged(e: Tensor, c: Tensor) -> Tensor:
    """e += P c in place, P copying each coarse value to its 2×2 fine pixels (cropped to e's size). A coarse
    pixel is unknown only when its fine pixels all are, and a correction is zero off the unknown pixels, so
    P c never touches a kept pixel. Widening the columns first and adding each widened row to its two fine
    rows is 3× faster on the CPU than one broadcast over the 2×2 blocks."""
    h, w = e.shape[-2:]
    wide = c.repeat_interleave(2, -1)[..., :w]
    e[..., : h - h % 2, :].unflatten(-2, (h // 2, 2)).add_(wide[..., : h // 2, None, :])
    if h % 2:
        e[..., -1, :].add_(wide[..., -1, :])
    return e


def _v_cycle(grids: list[_Grid | _Coarsest], level: int, r: Tensor, sweeps: int = 2) -> Tensor:
    """An approximate solve of A e = r: a symmetric V-cycle (Jacobi smoothing, restriction by 2×2 sums, the
    transpose of the piecewise-constant prolongation, an exact solve at the coarsest level), so it is a
    valid preconditioner for CG. The result lies in one of the level's buffers, valid until the next cycle."""
    grid = grids[level]
    if isinstance(grid, _Coarsest):
        return grid.solve(r)
    e = torch.mul(grid.inverse, r, out=grid.start)
    for _ in range(sweeps - 1):
        e = grid.smooth(e)
    if e is grid.start:  # no pre-smoothing: the correction must not land in the buffer the sweeps read
        e = grid.even.copy_(e)
    coarse = grids[level + 1]
    residual = grid.residual(e, r, grid.odd if e is grid.even else grid.even)
    # the stencil at twice the spacing is a quarter of the fine one: the 2×2 sum is restriction and scaling
    rhs = coarse.rhs if isinstance(coarse, _Grid) else None
    rhs = _restrict(residual, rhs).mul_(coarse.removed)
    _add_prolonged(e, _v_cycle(grids, level + 1, rhs, sweeps))
    for _ in range(sweeps):
        e = grid.smooth(e)
    return e


#: images solved together by :func:`_solve_cg`: about this many values per chunk, so that the stencil passes
#: stay in the CPU's cache (chunks of 2²⁰ or more values run 10–40% slower on the 2-core dev machine)
CHUNK_VALUES = 1 << 19


def _solve_cg(
    x: Tensor, removed: Tensor, tol: float | None = None, max_iter: int = 200, out: Tensor | None = None
) -> Tensor:
    """The same system on x's device: conjugate gradients preconditioned by a geometric multigrid V-cycle,
    all channels of an image at once, the images in chunks of about :data:`CHUNK_VALUES` values on the CPU
    (the whole batch at once on a GPU), each chunk's solution written into ``out``.

    The matrix is symmetric positive definite on the removed pixels (each component of removed pixels
    touches a kept one when p < 100). With the V-cycle, about 10 iterations reach a relative residual of
    ``tol`` at any image size (plain CG needs O(side) iterations: hundreds at 224 px). Each image stops on
    its own residual, so a result does not depend on the other images of its batch. Default ``tol``: 1e-5
    in float32 (the filled values then lie within 1e-4 of the exact solve, a hundredth of the imputation
    noise), 1e-11 in float64.
    """
    if tol is None:
        tol = 1e-11 if x.dtype == torch.float64 else 1e-5
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    per_image = x[0].numel()
    chunk = x.shape[0] if x.device.type != "cpu" else max(1, CHUNK_VALUES // per_image)
    if chunk < x.shape[0]:
        for i in range(0, x.shape[0], chunk):
            _solve_cg(x[i : i + chunk], removed[i : i + chunk], tol, max_iter, out[i : i + chunk])
        return out
    tiny = torch.finfo(x.dtype).tiny
    grids = _hierarchy(removed.to(x.dtype).unsqueeze(1), x.shape[1])
    grid = grids[0]
    residual = _neighbour_sum((1 - grid.removed) * x).mul_(grid.removed)
    if isinstance(grid, _Coarsest):  # a small image: the direct solve is the whole solution
        return out.copy_(grid.solve(residual))
    target = tol * _norms(residual)
    solution = out.zero_()
    product, square = torch.empty((2, *x.shape), dtype=x.dtype, device=x.device)
    z = _v_cycle(grids, 0, residual)
    direction = z.clone()
    rz = torch.mul(residual, z, out=square).sum((2, 3), keepdim=True)
    for _ in range(max_iter):
        active = (_norms(residual) > target).to(x.dtype)
        if not bool(active.any()):
            break
        grid.apply(direction, product)
        curvature = torch.mul(direction, product, out=square).sum((2, 3), keepdim=True)
        step = rz / curvature.clamp_min(tiny) * active
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1)
        z = _v_cycle(grids, 0, residual)
        rz_new = torch.mul(residual, z, out=square).sum((2, 3), keepdim=True)
        direction.mul_(rz_new / rz.clamp_min(tiny)).add_(z)
        rz = rz_new
    return solution


def _norms(v: Tensor) -> Tensor:
    """The Euclidean norm of each image plane, B×C×1×1 (one read, no temporary)."""
    return torch.linalg.vector_norm(v, dim=(2, 3), keepdim=True)


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
    unknown = removed.unsqueeze(1).to(x.dtype)
    if noise:
        if noise_field is None:
            generator = torch.Generator().manual_seed(seed)
            noise_field = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        filled.addcmul_(noise_field.to(filled), unknown, value=noise)
    # both solvers leave the kept pixels at 0: adding x there returns them bit for bit
    return filled.addcmul_(x, 1 - unknown)


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
