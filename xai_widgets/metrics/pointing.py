"""Localisation against ground-truth masks: the pointing game and the energy-based pointing game.

- **Pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016 / IJCV
  2018): a hit when the map's maximum falls on the object. With ties, a hit when any maximal pixel lies
  on the object (as Quantus's ``PointingGame``); ``tolerance`` > 0 widens the object by that many pixels
  (Zhang et al. use 15 px on PASCAL images).
- **Energy-based pointing game** (Wang et al., "Score-CAM", CVPRW 2020, eq. 8): the share of the map's
  energy inside the object, Σ_{mask} m⁺ / Σ m⁺ with m⁺ = max(m, 0) (``absolute=True``: |m|). A map with no
  positive energy scores 0.

Maps are N×H×W (a pixel map N×C×H×W is summed over channels first, as ``Explanation.attribution`` is);
masks are N×H×W booleans at the same resolution (maps at another resolution are resized bilinearly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..explanation import Explanation


def _maps_and_masks(maps: Explanation | Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(maps, Explanation):
        maps = maps.attribution
    if not isinstance(maps, Tensor) or not isinstance(masks, Tensor):
        raise InputError("maps and masks must be tensors (maps N×H×W or N×C×H×W, masks N×H×W)")
    maps = maps.detach().float()
    if maps.ndim == 4:
        maps = maps.sum(1)
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if maps.ndim != 3 or masks.ndim != 3 or maps.shape[0] != masks.shape[0]:
        raise InputError(
            f"need maps N×H×W and masks N×H×W for the same N, got {tuple(maps.shape)} and {tuple(masks.shape)}"
        )
    masks = masks.to(maps.device).bool()
    if maps.shape[1:] != masks.shape[1:]:
        maps = F.interpolate(maps[:, None], size=masks.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    return maps, masks


def pointing_game(maps: Explanation | Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Per image, 1.0 when a maximum of the map lies on the object (within ``tolerance`` pixels), else 0.0.

    Example:
        >>> maps = torch.zeros(1, 4, 4); maps[0, 1, 2] = 1.0
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2, 2:] = True
        >>> pointing_game(maps, masks)
        tensor([1.])
    """
    maps, masks = _maps_and_masks(maps, masks)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise InputError(f"tolerance must be a non-negative int (pixels), got {tolerance!r}")
    if tolerance:
        masks = F.max_pool2d(masks[:, None].float(), 2 * tolerance + 1, 1, tolerance)[:, 0] > 0
    flat = maps.flatten(1)
    top = flat == flat.amax(1, keepdim=True)
    return (top & masks.flatten(1)).any(1).float()


def energy_pointing_game(maps: Explanation | Tensor, masks: Tensor, absolute: bool = False) -> Tensor:
    """Per image, the share of the map's positive (``absolute``: total absolute) energy inside the object."""
    maps, masks = _maps_and_masks(maps, masks)
    energy = maps.abs() if absolute else maps.clamp_min(0)
    flat = energy.flatten(1)
    inside = (flat * masks.flatten(1)).sum(1)
    total = flat.sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
