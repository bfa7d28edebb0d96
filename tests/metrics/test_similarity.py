"""Similarity metrics of the sanity checks: agreement with scipy and scikit-image, Adebayo's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from xai_widgets.errors import InputError
from xai_widgets.explanation import Explanation
from xai_widgets.metrics import similarity as sim


def test_ranks_average_ties_like_scipy():
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 6, (5, 200), generator=generator).double()
    values[2] = 3.0  # one constant row
    expected = np.stack([rankdata(row) for row in values.numpy()])
    np.testing.assert_allclose(sim.rank(values).numpy(), expected)


def test_spearman_matches_scipy_with_and_without_ties():
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(6, 16, 16, generator=generator)
    b = a + 0.3 * torch.rand(6, 16, 16, generator=generator)
    a[:3] = (a[:3] * 4).floor()  # heavy ties, like clipped maps
    ours = sim.spearman(a, b).numpy()
    theirs = [spearmanr(p.ravel(), q.ravel())[0] for p, q in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    # scipy ≥ 1.15 returns pearsonr in the input's precision: give it float64 like our reference
    pearson = [pearsonr(p.ravel(), q.ravel())[0] for p, q in zip(a.double().numpy(), b.double().numpy())]
    np.testing.assert_allclose(sim.pearson(a, b).numpy(), pearson, atol=1e-10)


def _visualize_image_grayscale(image_3d: np.ndarray, percentile: float = 99) -> np.ndarray:
    """The normalisation of the PAIR ``saliency`` package used by Adebayo et al., transcribed (H×W×C)."""
    image_2d = np.sum(np.abs(image_3d), axis=2)
    vmax, vmin = np.percentile(image_2d, percentile), np.min(image_2d)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)


def test_abs_map_is_adebayos_preprocessing():
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(3, 3, 20, 24, generator=generator) ** 3
    ours = sim.abs_map(maps).numpy()
    for i in range(3):
        expected = _visualize_image_grayscale(maps[i].permute(1, 2, 0).double().numpy())
        np.testing.assert_allclose(ours[i], expected, atol=1e-6)
    assert ours.max() == 1.0 and (ours == 1.0).mean() > 0.005  # the top 1% is clipped to 1
    np.testing.assert_allclose(sim.signed_map(maps).numpy(), maps.sum(1).numpy())


def test_ssim_and_hog_agree_with_scikit_image():
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(2, 32, 32, generator=generator)
    b = (a + 0.5 * torch.rand(2, 32, 32, generator=generator)).clamp(0, 1)
    expected = [
        structural_similarity(p, q, data_range=1.0) for p, q in zip(a.double().numpy(), b.double().numpy())
    ]
    np.testing.assert_allclose(sim.ssim(a, b).numpy(), expected)
    hp = hog(a[0].double().numpy(), orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2))
    hq = hog(b[0].double().numpy(), orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2))
    assert sim.hog_similarity(a, b)[0].item() == pytest.approx(pearsonr(hp, hq)[0], abs=1e-10)


def test_compare_identical_unrelated_and_degenerate_maps():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 32, 32, generator=generator)
    same = sim.compare(x, x.clone(), ("spearman_abs", "spearman", "ssim", "hog", "pearson", "mse"))
    for metric in ("spearman_abs", "spearman", "ssim", "hog", "pearson"):
        np.testing.assert_allclose(same[metric].numpy(), 1.0, atol=1e-9)
    assert same["mse"].abs().max() == 0
    other = sim.compare(x, torch.randn(4, 3, 32, 32, generator=generator))
    assert other["spearman_abs"].abs().max() < 0.1 and other["spearman"].abs().max() < 0.1
    # an Explanation uses its per-channel map; ranks are invariant to a positive scale of the signed map
    explanation = Explanation(attribution=x.sum(1), method="m", target=None, score=torch.zeros(4), pixel=x)
    assert sim.compare(explanation, 5 * x, ("spearman",))["spearman"].numpy() == pytest.approx(1.0)
    flat = torch.zeros(4, 32, 32)
    degenerate = sim.compare(flat, x.sum(1), ("spearman_abs", "hog"))
    assert (degenerate["spearman_abs"] == 0).all() and (degenerate["hog"] == 0).all()
    assert (sim.compare(flat, flat.clone(), ("spearman",))["spearman"] == 1).all()


def test_compare_rejects_bad_input():
    with pytest.raises(InputError, match="known: spearman_abs"):
        sim.compare(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), ("kendall",))
    with pytest.raises(InputError, match="cannot be compared"):
        sim.compare(torch.zeros(2, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(InputError, match="N×H×W"):
        sim.compare(torch.zeros(8), torch.zeros(8))
