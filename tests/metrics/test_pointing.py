"""Pointing game and energy-based pointing game: known answers, ties, tolerance, resizing, Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_widgets as xw
from xai_widgets.metrics.pointing import energy_pointing_game, pointing_game


def square_masks() -> torch.Tensor:
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    return masks


def test_hits_misses_ties_and_tolerance():
    maps = torch.zeros(3, 8, 8)
    maps[0, 3, 3] = 1.0  # on the object
    maps[1, 7, 7] = 1.0  # far off
    maps[2, 0, 0] = maps[2, 4, 4] = 1.0  # a tie: one maximum on the object counts as a hit
    assert pointing_game(maps, square_masks()).tolist() == [1.0, 0.0, 1.0]
    near = torch.zeros(1, 8, 8)
    near[0, 6, 3] = 1.0  # two pixels below the object
    assert pointing_game(near, square_masks()[:1]).item() == 0.0
    assert pointing_game(near, square_masks()[:1], tolerance=2).item() == 1.0


def test_energy_is_the_share_of_positive_mass_on_the_object():
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:5, 2:5] = 1.0
    maps[0, 0, 0] = 9.0  # 9 inside, 9 outside
    maps[1] = -1.0  # no positive energy at all
    maps[2, 3, 3], maps[2, 0, 0] = 3.0, -5.0  # negative evidence is not energy (unless absolute)
    energy = energy_pointing_game(maps, square_masks())
    torch.testing.assert_close(energy, torch.tensor([0.5, 0.0, 1.0]))
    assert energy_pointing_game(maps[2:], square_masks()[2:], absolute=True).item() == pytest.approx(3 / 8)


def test_low_resolution_maps_are_resized_and_pixel_maps_summed():
    coarse = torch.zeros(1, 4, 4)
    coarse[0, 1, 1] = 1.0
    assert pointing_game(coarse, square_masks()[:1]).item() == 1.0
    pixel = torch.zeros(1, 3, 8, 8)
    pixel[0, :, 7, 7] = 1.0
    assert pointing_game(pixel, square_masks()[:1]).item() == 0.0
    with pytest.raises(xw.InputError, match="same N"):
        pointing_game(torch.zeros(2, 8, 8), square_masks())


def test_pointing_game_equals_quantus():
    quantus = pytest.importorskip("quantus")
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(16, 12, 12, generator=generator)
    masks = torch.zeros(16, 12, 12, dtype=torch.bool)
    for i in range(16):
        r, c = torch.randint(0, 8, (2,), generator=generator).tolist()
        masks[i, r : r + 4, c : c + 4] = True
    theirs = quantus.PointingGame(disable_warnings=True)(
        model=None,
        x_batch=np.zeros((16, 1, 12, 12), dtype=np.float32),
        y_batch=np.zeros(16, dtype=np.int64),
        a_batch=maps.unsqueeze(1).numpy(),
        s_batch=masks.unsqueeze(1).numpy().astype(np.float32),
    )
    assert pointing_game(maps, masks).tolist() == [float(v) for v in theirs]
    assert 0 < sum(theirs) < 16
