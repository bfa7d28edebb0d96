"""Input alignment: how much of a pixel-level map is the input's own structure.

Zheng, Sang and Xu (arXiv 2503.11160, 2025) explain why Guided Backprop, RectGrad, LRP-z⁺/α1β0 and DTD
pass the sanity checks of Adebayo et al. badly: at every ReLU they pass back only the signal of *activated*
units and drop its negative part (a *negative filtering rule*), so what reaches the input is a combination
of the weights of the units the input activated, and that combination aligns with the input itself. A
direct consequence, used in the tests: with a bias-free first layer z = Wx followed by a ReLU, the map is
g = Wᵀδ with δ ≥ 0 only where z > 0, so ⟨g, x⟩ = ⟨δ, Wx⟩ = Σ δᵢzᵢ ≥ 0 for any input and class.

The score offered here:

- ``cosine``: cos(g, x̃) over all pixels and channels, with x̃ the input centred per sample and channel
  (so an image's mean colour does not count as structure);
- ``local``: the cosine over non-overlapping p×p patches (map and input centred within each patch, so the
  local correlation), averaged with weights equal to the map's share of |g| in each patch, i.e. the
  alignment where the map puts its mass;
- ``null_cosine`` / ``null_local``: the same scores for the map with its patches shuffled (mean over a few
  seeded permutations): what chance alignment looks like for this map and image;
- ``gradient_cosine`` / ``gradient_local``: the plain gradient's scores for the same model, input and
  target (when a model is given), the reference a method's number should be read against.

For maps that are already multiplied by the input (input×gradient, Integrated Gradients, LRP whose input
relevance is x ⊙ a modified gradient) the score compares the signal before that product, g = map / x,
on the pixels where |x| is not negligible (``divide_input``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..explanation import Explanation
from ..model import ModelAdapter, Target, as_adapter, gradients_enabled

#: Methods whose maps are x ⊙ (a gradient-like signal); ``divide_input=None`` divides their maps by x.
TIMES_INPUT = ("input_x_gradient", "integrated_gradients", "dtd")
TIMES_INPUT_PREFIXES = ("lrp",)


@dataclass
class Alignment:
    """Per-sample input-alignment scores (tensors of N values on the CPU); see the module docstring."""

    cosine: Tensor
    local: Tensor
    null_cosine: Tensor
    null_local: Tensor
    gradient_cosine: Tensor | None = None
    gradient_local: Tensor | None = None
    method: str | None = None

    def summary(self) -> dict[str, float]:
        """Batch means of every score that was computed."""
        return {
            f.name: float(getattr(self, f.name).mean())
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }


def _times_input(explanation: Explanation) -> bool:
    if "times_input" in explanation.extras:
        return bool(explanation.extras["times_input"])
    return explanation.method in TIMES_INPUT or explanation.method.startswith(TIMES_INPUT_PREFIXES)


def _cos(a: Tensor, b: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """Cosine along ``dim``; 0 where either side is zero."""
    dot = (a * b).sum(dim)
    norm = a.norm(dim=dim) * b.norm(dim=dim)
    return torch.where(norm > 0, dot / norm.clamp_min(1e-300), torch.zeros_like(dot))


def _patches(t: Tensor, size: int) -> Tensor:
    """N×C×H×W → N×P×C×size×size non-overlapping patches (the remainder at the border is dropped)."""
    n, c, h, w = t.shape
    rows, cols = h // size, w // size
    t = t[:, :, : rows * size, : cols * size]
    t = t.reshape(n, c, rows, size, cols, size).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(n, rows * cols, c, size, size)


def _scores(g: Tensor, x: Tensor, size: int, centre: bool) -> tuple[Tensor, Tensor]:
    """Global and mass-weighted local cosine of maps ``g`` and inputs ``x`` (both N×C×H×W, float64)."""
    xc = x - x.mean((2, 3), keepdim=True) if centre else x
    global_ = _cos(g.flatten(1), xc.flatten(1), 1)
    gp, xp = _patches(g, size), _patches(x, size)
    mass = gp.abs().flatten(2).sum(2)
    if centre:
        gp, xp = gp - gp.mean((3, 4), keepdim=True), xp - xp.mean((3, 4), keepdim=True)
    local_cos = _cos(gp.flatten(2), xp.flatten(2), 2)
    weights = mass / mass.sum(1, keepdim=True).clamp_min(1e-300)
    return global_, (weights * local_cos).sum(1)


def _shuffle_patches(g: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """The map with its p×p patches moved to random positions (one permutation per sample)."""
    n, c, h, w = g.shape
    rows, cols = h // size, w // size
    patches = _patches(g, size)
    perm = torch.stack([torch.randperm(rows * cols, generator=generator) for _ in range(n)]).to(g.device)
    patches = torch.gather(patches, 1, perm.view(n, -1, 1, 1, 1).expand_as(patches))
    patches = patches.reshape(n, rows, cols, c, size, size).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(n, c, rows * size, cols * size)


def _prepare(
    explanation: Explanation | Tensor, x: Tensor, divide_input: bool | None, eps: float
) -> tuple[Tensor, Tensor]:
    """The map as N×C'×H×W (C' = C for pixel maps, 1 otherwise) and the matching input, float64."""
    if isinstance(explanation, Explanation):
        maps = explanation.pixel if explanation.pixel is not None else explanation.attribution
        divide = _times_input(explanation) if divide_input is None else divide_input
    elif isinstance(explanation, Tensor):
        maps, divide = explanation, bool(divide_input)
    else:
        raise InputError(
            f"input_alignment expects an Explanation or a tensor map, got {type(explanation).__name__}"
        )
    if not isinstance(x, Tensor) or x.ndim not in (3, 4):
        raise InputError(
            f"x must be the N×C×H×W model input the map explains, got {getattr(x, 'shape', x)!r}"
        )
    x = (x.unsqueeze(0) if x.ndim == 3 else x).detach().double()
    maps = maps.detach().double().to(x.device)
    if maps.ndim == 2:
        maps = maps.unsqueeze(0)
    if maps.ndim == 3:
        maps = maps.unsqueeze(1)
    if maps.ndim != 4 or maps.shape[0] != x.shape[0] or maps.shape[2:] != x.shape[2:]:
        raise InputError(
            f"the map of shape {tuple(maps.shape)} does not match the input of shape {tuple(x.shape)}"
        )
    if maps.shape[1] not in (1, x.shape[1]):
        raise InputError(f"the map has {maps.shape[1]} channels, the input {x.shape[1]}")
    if divide:
        scale = x.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
        keep = x.abs() > eps * scale
        if maps.shape[1] == 1:
            raise InputError("divide_input needs a per-channel (N×C×H×W) map; this map has one channel")
        maps = torch.where(keep, maps / torch.where(keep, x, torch.ones_like(x)), torch.zeros_like(maps))
        x = torch.where(keep, x, torch.zeros_like(x))
    if maps.shape[1] == 1 and x.shape[1] != 1:
        x = (x - x.mean((2, 3), keepdim=True)).sum(1, keepdim=True)
    return maps, x


@gradients_enabled()
def input_alignment(
    explanation: Explanation | Tensor,
    x: Tensor,
    model: nn.Module | ModelAdapter | None = None,
    target: Target = None,
    patch: int = 8,
    centre: bool = True,
    divide_input: bool | None = None,
    null_samples: int = 8,
    seed: int = 0,
    eps: float = 1e-3,
) -> Alignment:
    """How much a map is the input itself: global and local cosine with the centred input, a shuffled null,
    and (given ``model``) the plain gradient's scores for comparison.

    Args:
        explanation: an Explanation (its per-channel ``pixel`` map when there is one) or an N×C×H×W / N×H×W map.
        x: the model input the map explains (N×C×H×W).
        model: the model (or adapter) to compute the plain gradient's reference scores; None skips them.
        target: the class for the reference gradient; default: the Explanation's target, else the prediction.
        patch: side of the local patches in pixels.
        centre: remove each channel's mean (per sample; per patch, from map and input, for the local score).
            With ``centre=False`` the global score has the sign of the inner product ⟨map, x⟩.
        divide_input: compare map / x instead of the map; None decides from the method (×input maps, LRP).
        null_samples: patch permutations averaged for the null scores.
        seed: seed of the permutations.
        eps: with ``divide_input``, pixels with |x| ≤ eps · max|x| are left out.

    Returns:
        An :class:`Alignment` with N values per score (float64, CPU).
    """
    if not isinstance(patch, int) or patch < 1 or patch > min(x.shape[-2:]):
        raise InputError(
            f"patch must be an int between 1 and the image side {min(x.shape[-2:])}, got {patch!r}"
        )
    if not isinstance(null_samples, int) or null_samples < 1:
        raise InputError(f"null_samples must be a positive int, got {null_samples!r}")
    maps, xd = _prepare(explanation, x, divide_input, eps)
    cosine, local = _scores(maps, xd, patch, centre)
    generator = torch.Generator().manual_seed(seed)
    size = (maps.shape[2] // patch) * patch, (maps.shape[3] // patch) * patch
    cropped = xd[:, :, : size[0], : size[1]]
    nulls = [
        _scores(_shuffle_patches(maps, patch, generator), cropped, patch, centre) for _ in range(null_samples)
    ]
    result = Alignment(
        cosine=cosine.cpu(),
        local=local.cpu(),
        null_cosine=torch.stack([g for g, _ in nulls]).mean(0).cpu(),
        null_local=torch.stack([loc for _, loc in nulls]).mean(0).cpu(),
        method=explanation.method if isinstance(explanation, Explanation) else None,
    )
    if model is not None:
        from ..methods.gradient import input_gradient

        adapter = as_adapter(model)
        inputs = adapter.prepare(x)
        if target is None and isinstance(explanation, Explanation) and explanation.target is not None:
            target = explanation.target
        target = adapter.resolve_target(target, inputs)
        with adapter.evaluating():
            gradient = input_gradient(adapter, inputs, target)[0]
        reference = _scores(*_prepare(gradient, inputs, False, eps), patch, centre)
        result.gradient_cosine, result.gradient_local = (s.cpu() for s in reference)
    return result
