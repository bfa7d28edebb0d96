"""Deletion and insertion curves: end points, a perfect map against its inverse, the blur fill, errors."""

from __future__ import annotations

import pytest
import torch
from test_road import TextureDetector, textured

import xai_widgets as xw
from xai_widgets.metrics.deletion_insertion import deletion_insertion_curves


def test_end_points_and_a_perfect_map_beats_its_inverse(guard):
    model = TextureDetector().eval()
    x, perfect = textured()
    with guard(model):
        good = deletion_insertion_curves(model, x, perfect + 1e-3 * torch.rand(1, 24, 24), target=0, steps=10)
        bad = deletion_insertion_curves(model, x, -perfect, target=0, steps=10)
    full = torch.softmax(model(x), 1)[0, 0]
    assert good.deletion.shape == good.insertion.shape == (1, 11)
    torch.testing.assert_close(
        good.fractions, torch.linspace(0, 1, 11, dtype=torch.float64), atol=1 / 576, rtol=0
    )
    torch.testing.assert_close(good.deletion[0, 0], full)  # nothing removed yet
    torch.testing.assert_close(good.insertion[0, -1], full)  # everything put back
    torch.testing.assert_close(good.deletion[0, -1], good.insertion[0, 0])  # both: the empty image
    assert good.deletion_auc[0] < bad.deletion_auc[0]
    assert good.insertion_auc[0] > bad.insertion_auc[0]
    torch.testing.assert_close(good.deletion_auc, torch.trapezoid(good.deletion, good.fractions.float()))


def test_blur_fill_and_bad_arguments(small_cnn):
    x = torch.randn(2, 3, 16, 16)
    curves = deletion_insertion_curves(
        small_cnn, x, torch.rand(2, 16, 16), fill="blur", steps=4, batch_size=3
    )
    assert curves.deletion.shape == (2, 5)
    assert bool(((curves.deletion >= 0) & (curves.deletion <= 1)).all())
    with pytest.raises(xw.InputError, match="fill"):
        deletion_insertion_curves(small_cnn, x, torch.rand(2, 16, 16), fill="zeros")
    with pytest.raises(xw.InputError, match="N = 2"):
        deletion_insertion_curves(small_cnn, x, torch.rand(3, 16, 16))
