"""Gradient family: saliency, input×gradient, Integrated Gradients, SmoothGrad and VarGrad.

All of them are plain gradients of the target score with respect to the input (no modified backward),
batched over samples and integration steps. Argument names follow Captum where the concept is the same
(``baseline`` ↔ ``baselines``, ``steps`` ↔ ``n_steps``, ``method`` ↔ ``quadrature``).
"""

from __future__ import annotations

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
    are evaluated in chunks of ``batch_size`` rows (default: all at once up to 256 rows). The Explanation's
    ``extras['convergence_delta']`` is Σ attribution − (f(x) − f(x′)) per sample (completeness).
    """
    base = _baseline(x, baseline)
    alphas, weights = quadrature_rule(steps, quadrature)
    alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
    n = x.shape[0]
    rows = batch_size or max(1, min(256, n * steps))
    if not isinstance(rows, int) or rows < 1:
        raise MethodError(f"batch_size must be a positive int, got {batch_size!r}")
    total = torch.zeros_like(x)
    flat_alpha = alphas.repeat(n)
    flat_weight = weights.repeat(n)
    sample = torch.arange(n, device=x.device).repeat_interleave(steps)
    for start in range(0, n * steps, rows):
        stop = min(start + rows, n * steps)
        idx = sample[start:stop]
        a = flat_alpha[start:stop].view(-1, 1, 1, 1)
        points = base[idx] + a * (x[idx] - base[idx])
        tgt = target[idx] if isinstance(target, Tensor) else target
        grads, _ = input_gradient(adapter, points, tgt)
        total.index_add_(0, idx, grads * flat_weight[start:stop].view(-1, 1, 1, 1))
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


def _noisy_gradients(adapter, x, target, samples, noise, batch_size, seed, progress) -> Tensor:
    """Gradients at ``samples`` noisy copies of each image: S×N×C×H×W, noise std = noise × value range."""
    if not isinstance(samples, int) or samples < 1:
        raise MethodError(f"samples must be a positive int, got {samples!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise MethodError(
            f"noise must be a non-negative number (a fraction of the value range), got {noise!r}"
        )
    n = x.shape[0]
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1) * float(noise)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    per_chunk = max(1, (batch_size or 256) // n)
    out = []
    for start in range(0, samples, per_chunk):
        k = min(per_chunk, samples - start)
        eps = torch.randn((k, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        points = (x.unsqueeze(0) + eps * spread.unsqueeze(0)).reshape(k * n, *x.shape[1:])
        tgt = target.repeat(k) if isinstance(target, Tensor) else target
        grads, _ = input_gradient(adapter, points, tgt)
        out.append(grads.view(k, *x.shape))
        if progress is not None:
            progress(start + k, samples)
    return torch.cat(out)


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

    ``noise`` is the standard deviation as a fraction of each image's value range (the paper's 10–20%).
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
    """VarGrad (Adebayo et al. 2018): the variance of the gradient over noisy copies (non-negative)."""
    return _noisy_gradients(adapter, x, target, samples, noise, batch_size, seed, progress).var(
        0, unbiased=False
    )
