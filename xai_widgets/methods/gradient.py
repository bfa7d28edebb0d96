"""Gradient family: saliency, input×gradient, Integrated Gradients, SmoothGrad and VarGrad.

All of them are plain gradients of the target score with respect to the input (no modified backward),
batched over samples and integration steps. Argument names follow Captum where the concept is the same
(``baseline`` ↔ ``baselines``, ``steps`` ↔ ``n_steps``, ``method`` ↔ ``quadrature``).

Integrated Gradients and SmoothGrad/VarGrad evaluate many rows (images × steps or noise samples); by default
they run as many rows per forward+backward as fit :data:`ACTIVATION_BUDGET` by :func:`default_rows`. A map
never depends on the other images of its batch: SmoothGrad's noise is drawn per image, from ``seed`` and a
hash of the image's values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, MethodError
from ..explanation import Explanation
from ..model import ModelAdapter
from ..registry import register_method

Progress = Callable[[int, int], None] | None


def input_gradient(adapter: ModelAdapter, x: Tensor, target, params=None) -> tuple[Tensor, Tensor]:
    """d score / d x for a batch, and the score; one forward and one backward, parameters untouched."""
    capture = adapter.capture(x, [], target, grads=False, input_grad=True, params=params)
    return capture.input_grad, capture.score


def _pixel_explanation(method: str, pixel: Tensor, score: Tensor, target, **extras) -> Explanation:
    """An Explanation of a pixel map whose score the method already has (saves explain() a forward)."""
    return Explanation(
        attribution=pixel.sum(1),
        method=method,
        target=target if isinstance(target, Tensor) else None,
        score=score,
        pixel=pixel,
        extras=extras,
    )


@register_method("saliency", family="gradient", cost="cheap")
def saliency(adapter: ModelAdapter, x: Tensor, target) -> Explanation:
    """The signed gradient of the target score with respect to the input (Simonyan et al. 2014)."""
    grad, score = input_gradient(adapter, x, target)
    return _pixel_explanation("saliency", grad, score, target)


@register_method("input_x_gradient", family="gradient", cost="cheap")
def input_x_gradient(adapter: ModelAdapter, x: Tensor, target) -> Explanation:
    """Input times gradient (Shrikumar et al. 2016): a first-order Taylor term per pixel."""
    grad, score = input_gradient(adapter, x, target)
    return _pixel_explanation("input_x_gradient", x * grad, score, target)


def quadrature_rule(steps: int, method: str = "gausslegendre") -> tuple[Tensor, Tensor]:
    """Nodes α in [0, 1] and weights for ∫₀¹ g(α) dα, with Captum's names and conventions."""
    if not isinstance(steps, int) or steps < 1:
        raise MethodError(f"steps must be a positive int, got {steps!r}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = 0.5 * (nodes + 1.0), 0.5 * weights
    elif method == "riemann_trapezoid":
        if steps < 2:
            raise MethodError("riemann_trapezoid needs steps >= 2")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
    elif method in ("riemann_left", "riemann_right", "riemann_middle"):
        offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
        alphas = (np.arange(steps) + offset) / steps
        weights = np.full(steps, 1.0 / steps)
    else:
        raise MethodError(
            f"unknown quadrature {method!r}; use gausslegendre, riemann_trapezoid, riemann_left, "
            "riemann_right or riemann_middle"
        )
    return torch.as_tensor(alphas, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)


def _expand_target(target, repeats: int):
    return target.repeat_interleave(repeats) if isinstance(target, Tensor) else target


ACTIVATION_BUDGET = 2 * 2**30
"""Bytes of activations one forward+backward of IG or SmoothGrad may hold by default (2 GiB): resnet50 at
224 px then runs 16 rows per pass: batch 2 × 64 steps peaks at 2.85 GiB of process memory, 1.15 GiB of it
imports and model (benchmarks/memory.py; 256 rows per pass peaked at 11.9 GB)."""

MAX_ROWS = 256


def row_bytes(adapter: ModelAdapter, x: Tensor) -> int:
    """Estimated bytes that one row (one image) holds during a forward+backward: the input plus the output of
    every call of every leaf module in the layer catalogue (what autograd keeps for the backward; the
    backward's gradients are freed as it goes), at ``x``'s size and dtype. Residual adds and other functional
    results are not modules; counting both a convolution's and its BatchNorm's output covers them (resnet50,
    224 px: estimate 122 MB, measured ≈ 106 MB of peak memory per row)."""
    catalogue = adapter.layers()
    calls: dict[int, list] = {}
    for entry in catalogue:
        if entry.out_shape is not None and entry.kind != "block":
            calls.setdefault(id(entry.module), []).append(entry)
    values = sum(
        sum(math.prod(e.out_shape) for e in group) * (group[0].calls if len(group) == 1 else 1)
        for group in calls.values()
    )
    size = adapter.input_size
    pixels = math.prod(x.shape[2:]) / max(1, math.prod(size[1:])) if len(size) == x.ndim - 1 else 1.0
    return int((values * pixels + x[0].numel()) * x.element_size())


def default_rows(adapter: ModelAdapter, x: Tensor, budget: int | None = None) -> int:
    """Rows per forward+backward that keep the activations within ``budget`` bytes (default
    :data:`ACTIVATION_BUDGET`), from 1 to 256."""
    budget = ACTIVATION_BUDGET if budget is None else budget
    return max(1, min(MAX_ROWS, budget // max(1, row_bytes(adapter, x))))


def _rows(adapter: ModelAdapter, x: Tensor, batch_size, total: int) -> int:
    """The chunk size: ``batch_size`` (a positive int) or :func:`default_rows`, at most ``total``."""
    if batch_size is None:
        return max(1, min(total, default_rows(adapter, x)))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MethodError(
            f"batch_size must be a positive int (rows per forward+backward) or None for a size chosen from "
            f"the model's activation memory, got {batch_size!r}"
        )
    return batch_size


def _baseline(x: Tensor, baseline: float | Tensor | None) -> Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, Tensor):
        raise InputError(f"baseline must be None, a number or a tensor, got {type(baseline).__name__}")
    baseline = baseline.to(x)
    if baseline.ndim == 3:
        baseline = baseline.unsqueeze(0)
    try:
        return baseline.expand_as(x)
    except RuntimeError as error:
        raise InputError(
            f"baseline of shape {tuple(baseline.shape)} does not match the input {tuple(x.shape)}"
        ) from error


@register_method("integrated_gradients", family="gradient", cost="moderate")
def integrated_gradients(
    adapter: ModelAdapter,
    x: Tensor,
    target,
    baseline: float | Tensor | None = None,
    steps: int = 50,
    batch_size: int | None = None,
    quadrature: str = "gausslegendre",
    progress: Progress = None,
) -> Explanation:
    """Integrated Gradients (Sundararajan et al. 2017): (x − x′) · ∫₀¹ ∇f(x′ + α(x − x′)) dα.

    ``baseline`` x′ defaults to zeros (Captum's default); ``quadrature`` is Captum's ``method`` (see
    :func:`quadrature_rule`; our ``riemann_trapezoid`` is the exact composite trapezoid rule, whose weights sum
    to 1, where Captum's sum to (steps − 1)/steps). All N·steps points
    are evaluated in chunks of ``batch_size`` rows (default: :func:`default_rows`, as many as fit 2 GiB of
    activations, at most 256). The Explanation's
    ``extras['convergence_delta']`` is Σ attribution − (f(x) − f(x′)) per sample (completeness).
    """
    base = _baseline(x, baseline)
    alphas, weights = quadrature_rule(steps, quadrature)
    alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
    n = x.shape[0]
    rows = _rows(adapter, x, batch_size, n * steps)
    total = torch.zeros_like(x)
    flat_alpha = alphas.repeat(n)
    flat_weight = weights.repeat(n)
    sample = torch.arange(n, device=x.device).repeat_interleave(steps)
    for start in range(0, n * steps, rows):
        stop = min(start + rows, n * steps)
        idx = sample[start:stop]
        a = flat_alpha[start:stop].view(-1, *[1] * (x.ndim - 1))
        points = base[idx] + a * (x[idx] - base[idx])
        tgt = target[idx] if isinstance(target, Tensor) else target
        grads, _ = input_gradient(adapter, points, tgt)
        total.index_add_(0, idx, grads * flat_weight[start:stop].view(-1, *[1] * (x.ndim - 1)))
        if progress is not None:
            progress(stop, n * steps)
    attribution = (x - base) * total
    with torch.no_grad():
        f_x = adapter.score(adapter.forward(x), target)
        f_base = adapter.score(adapter.forward(base), target)
    delta = attribution.flatten(1).sum(1) - (f_x - f_base)
    return Explanation(
        attribution=attribution.sum(1),
        method="integrated_gradients",
        target=target if isinstance(target, Tensor) else None,
        score=f_x,
        pixel=attribution,
        options={"baseline": baseline, "steps": steps, "quadrature": quadrature},
        extras={"convergence_delta": delta},
    )


def image_seed(seed: int, image: Tensor) -> int:
    """A 64-bit seed from ``seed`` and the values of one image (as float32), so the image draws the same noise
    in any batch, at any position, and in any dtype that holds the same values."""
    values = image.detach().float().cpu().contiguous().view(torch.uint8).numpy()
    digest = hashlib.blake2b(values.tobytes(), digest_size=8, key=str(seed).encode()[:64])
    return int.from_bytes(digest.digest(), "little")


def _noisy_gradients(adapter, x, target, samples, noise, batch_size, seed, progress) -> Tensor:
    """Gradients at ``samples`` noisy copies of each image: S×N×C×H×W, noise std = noise × value range.

    Image i draws its S noise tensors, in order, from a generator seeded by :func:`image_seed`; the N·S rows
    run ``batch_size`` at a time (default :func:`default_rows`); progress(rows done, N·S)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise MethodError(f"samples must be a positive int, got {samples!r}")
    if isinstance(noise, bool) or not (isinstance(noise, (int, float)) and noise >= 0):
        raise MethodError(
            f"noise must be a non-negative number (a fraction of the value range), got {noise!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MethodError(f"seed must be an int, got {seed!r}")
    n, total = x.shape[0], x.shape[0] * samples
    rows = _rows(adapter, x, batch_size, total)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *[1] * (x.ndim - 1)) * float(noise)
    generators = [torch.Generator(device=x.device).manual_seed(image_seed(seed, x[i])) for i in range(n)]
    image = torch.arange(n, device=x.device).repeat_interleave(samples)
    out = torch.empty((total, *x.shape[1:]), device=x.device, dtype=x.dtype)
    for start in range(0, total, rows):
        stop = min(start + rows, total)
        idx = image[start:stop]
        eps = torch.stack(  # rows run image-major, in order, so each generator is read in sequence
            [
                torch.randn(x.shape[1:], generator=generators[row // samples], device=x.device)
                for row in range(start, stop)
            ]
        ).to(x.dtype)
        points = x[idx] + eps * spread[idx]
        tgt = target[idx] if isinstance(target, Tensor) else target
        out[start:stop], _ = input_gradient(adapter, points, tgt)
        if progress is not None:
            progress(stop, total)
    return out.view(n, samples, *x.shape[1:]).transpose(0, 1)


@register_method("smoothgrad", family="gradient", cost="moderate")
def smoothgrad(
    adapter: ModelAdapter,
    x: Tensor,
    target,
    samples: int = 25,
    noise: float = 0.15,
    batch_size: int | None = None,
    seed: int = 0,
    progress: Progress = None,
) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over Gaussian-noised copies of the input.

    ``noise`` is the standard deviation as a fraction of each image's value range (the paper's 10–20%). Each
    image's noise comes from ``seed`` and its own values, so its map is the same in any batch.
    """
    return _noisy_gradients(adapter, x, target, samples, noise, batch_size, seed, progress).mean(0)


@register_method("vargrad", family="gradient", cost="moderate", signed=False)
def vargrad(
    adapter: ModelAdapter,
    x: Tensor,
    target,
    samples: int = 25,
    noise: float = 0.15,
    batch_size: int | None = None,
    seed: int = 0,
    progress: Progress = None,
) -> Tensor:
    """VarGrad (Adebayo et al. 2018): the variance of the gradient over noisy copies (non-negative).

    The variance is computed in float32 and kept there: squares of float16 gradients underflow."""
    grads = _noisy_gradients(adapter, x, target, samples, noise, batch_size, seed, progress)
    return grads.float().var(0, unbiased=False)
