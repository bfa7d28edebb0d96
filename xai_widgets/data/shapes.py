"""Synthetic shapes: images with one labelled object and its pixel mask, the ground truth for explanations.

Each image holds exactly one object (circle, square, triangle, star, cross or ring) of random colour, size,
position and rotation, drawn over a textured, cluttered background (a colour gradient, stripes, smooth noise,
small distractor blobs) with pixel noise on top. The object's pixel mask is returned with the image, so a
method's map can be checked against where the evidence really is (the pointing game, Zhang et al. 2018).

Everything is computed in torch on coordinate grids, a chunk of images at a time, from one seeded
``torch.Generator``: the same ``(n, size, seed)`` always gives the same batch, on any machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
"""Class names in label order."""

_CHUNK = 1024
_BLOBS = 8
# object radius as a fraction of the image side; min contrast between object colour and background colour
_RADIUS = (0.15, 0.28)
_MIN_CONTRAST = 0.5


class ShapesBatch(NamedTuple):
    """A batch of synthetic shapes.

    ``images``: N×3×H×W float in [0, 1]; ``labels``: N long indices into ``SHAPE_CLASSES``;
    ``masks``: N×H×W bool, True on the object's pixels.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor


def make_shapes(n: int, size: int = 64, seed: int = 0) -> ShapesBatch:
    """Generate ``n`` images of ``size``×``size`` pixels with one object each, reproducibly from ``seed``.

    Labels are balanced (each class appears ``n // 6`` or ``n // 6 + 1`` times) in a random order.

    Example:
        >>> batch = make_shapes(12, size=32, seed=1)
        >>> batch.images.shape, batch.labels.shape, batch.masks.shape
        (torch.Size([12, 3, 32, 32]), torch.Size([12]), torch.Size([12, 32, 32]))
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"n must be a non-negative int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise InputError(f"size must be an int of at least 16 pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=gen) % len(SHAPE_CLASSES)
    images = torch.empty(n, 3, size, size)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        images[start:stop], masks[start:stop] = _render(labels[start:stop], size, gen)
    return ShapesBatch(images, labels, masks)


def _uniform(gen: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
    return torch.rand(*shape, generator=gen) * (high - low) + low


def _render(labels: Tensor, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw one chunk: background, distractors, object, pixel noise."""
    b = labels.shape[0]
    # pixel centres in [0, 1] image coordinates
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    image = _background(b, size, xx, yy, gen)
    image = _distractors(image, xx, yy, gen)

    radius = _uniform(gen, b, low=_RADIUS[0], high=_RADIUS[1])
    margin = 1.15 * radius + 1.0 / size  # the triangle and star reach past the radius
    cx = margin + torch.rand(b, generator=gen) * (1 - 2 * margin)
    cy = margin + torch.rand(b, generator=gen) * (1 - 2 * margin)
    angle = _uniform(gen, b, high=2 * math.pi)
    # object coordinates: centred, rotated, in units of the radius
    scale = radius.view(-1, 1, 1)
    dx, dy = (xx[:1] - cx.view(-1, 1, 1)) / scale, (yy[:, :1] - cy.view(-1, 1, 1)) / scale
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    mask = torch.zeros(b, size, size, dtype=torch.bool)
    for index, name in enumerate(SHAPE_CLASSES):
        rows = (labels == index).nonzero().flatten()
        if rows.numel():
            mask[rows] = _SHAPES[name](u[rows], v[rows])

    colour = _object_colour(image.mean(dim=(2, 3)), gen)
    image = torch.where(mask.unsqueeze(1), colour.view(b, 3, 1, 1), image)
    # light shading across the object, so its surface is not one flat colour
    shade = 0.08 * (u.clamp(-1, 1) * _uniform(gen, b, 1, 1, low=-1, high=1))
    image = image + mask.unsqueeze(1) * shade.unsqueeze(1)
    noise_level = _uniform(gen, b, 1, 1, 1, low=0.01, high=0.06)
    image = image + noise_level * torch.randn(image.shape, generator=gen)
    return image.clamp(0, 1), mask


def _background(b: int, size: int, xx: Tensor, yy: Tensor, gen: torch.Generator) -> Tensor:
    """Base colour + a linear gradient + stripes (half the images) + smooth low-frequency noise."""
    x, y = xx[:1], yy[:, :1]  # 1×W and H×1: sums of the two broadcast to H×W (separable fields)
    base = _uniform(gen, b, 3, 1, 1, low=0.2, high=0.8)
    direction = _uniform(gen, b, high=2 * math.pi).view(-1, 1, 1)
    ramp = (x - 0.5) * direction.cos() + (y - 0.5) * direction.sin()
    image = base + _uniform(gen, b, 3, 1, 1, low=-0.35, high=0.35) * ramp.unsqueeze(1)

    stripe_angle = _uniform(gen, b, high=math.pi).view(-1, 1, 1)
    frequency = _uniform(gen, b, 1, 1, low=3.0, high=9.0)
    phase = _uniform(gen, b, 1, 1, high=2 * math.pi)
    wave = torch.sin(2 * math.pi * frequency * (x * stripe_angle.cos() + y * stripe_angle.sin()) + phase)
    stripes_on = (torch.rand(b, 1, 1, 1, generator=gen) < 0.5).float()
    image += stripes_on * _uniform(gen, b, 3, 1, 1, low=-0.15, high=0.15) * wave.unsqueeze(1)

    # smooth noise: 6×6 random values upsampled bicubically, as two small matrix products
    coarse = torch.randn(b, 3, 6, 6, generator=gen)
    basis = F.interpolate(torch.eye(6).view(6, 1, 1, 6), size=(1, size), mode="bicubic", align_corners=False)
    upsample = basis.view(6, size).T  # size × 6
    image += 0.06 * (upsample @ coarse @ upsample.T)
    return image


def _distractors(image: Tensor, xx: Tensor, yy: Tensor, gen: torch.Generator) -> Tensor:
    """Paint 3 to 8 small round blobs of random colour (too small to be mistaken for the object)."""
    b = image.shape[0]
    count = torch.randint(3, _BLOBS + 1, (b, 1), generator=gen)
    active = torch.arange(_BLOBS).view(1, -1) < count
    centre = torch.rand(b, _BLOBS, 2, generator=gen)
    radius = _uniform(gen, b, _BLOBS, low=0.02, high=0.05)
    colour = torch.rand(b, _BLOBS, 3, generator=gen)
    radius2 = torch.where(active, radius**2, -1.0)  # inactive blobs cover nothing
    x, y = xx[:1], yy[:, :1]
    for k in range(_BLOBS):
        dx2 = (x - centre[:, k, 0].view(-1, 1, 1)) ** 2
        dy2 = (y - centre[:, k, 1].view(-1, 1, 1)) ** 2
        inside = (dx2 + dy2) <= radius2[:, k].view(-1, 1, 1)
        image = torch.where(inside.unsqueeze(1), colour[:, k].view(-1, 3, 1, 1), image)
    return image


def _object_colour(background: Tensor, gen: torch.Generator, candidates: int = 16) -> Tensor:
    """A random colour at least ``_MIN_CONTRAST`` (RGB distance) from the image's mean background colour."""
    b = background.shape[0]
    options = torch.rand(b, candidates, 3, generator=gen)
    distance = (options - background.unsqueeze(1)).norm(dim=-1)
    ok = distance >= _MIN_CONTRAST
    # first acceptable candidate, else the farthest one
    score = torch.where(ok, candidates - torch.arange(candidates).float(), distance - candidates)
    return options[torch.arange(b), score.argmax(dim=1)]


def _circle(u: Tensor, v: Tensor) -> Tensor:
    return u**2 + v**2 <= 1.0


def _square(u: Tensor, v: Tensor) -> Tensor:
    half = 0.8  # side 1.6 r: about the same area as the circle
    return (u.abs() <= half) & (v.abs() <= half)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    """Equilateral triangle with circumradius 1.15 (inradius half of it)."""
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):
        theta = math.pi / 2 + k * 2 * math.pi / 3
        inside &= u * math.cos(theta) + v * math.sin(theta) <= 0.575
    return inside


def _star(u: Tensor, v: Tensor) -> Tensor:
    """Five-pointed star: outer radius 1.1, inner radius 0.5; each sector folded onto one edge."""
    outer, inner, sector = 1.1, 0.5, 2 * math.pi / 5
    rho = torch.sqrt(u**2 + v**2)
    phi = torch.remainder(torch.atan2(v, u), sector)
    phi = torch.minimum(phi, sector - phi)  # fold onto [0, sector / 2]
    qx, qy = rho * phi.cos(), rho * phi.sin()
    # edge from the tip (outer, 0) to the notch (inner at sector / 2); inside = the origin's side
    ax, ay = outer, 0.0
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    cross = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
    return cross >= 0


def _cross(u: Tensor, v: Tensor) -> Tensor:
    arm = 0.33
    return ((u.abs() <= arm) & (v.abs() <= 1.0)) | ((v.abs() <= arm) & (u.abs() <= 1.0))


def _ring(u: Tensor, v: Tensor) -> Tensor:
    r2 = u**2 + v**2
    return (r2 <= 1.0) & (r2 >= 0.32**2)  # a thick ring: the hole is about a third of the width


_SHAPES = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
}
