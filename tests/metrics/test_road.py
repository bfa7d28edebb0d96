"""ROAD: noisy linear imputation with known answers, agreement with the authors' imputer (as shipped in
pytorch-grad-cam), MoRF/LeRF on a toy model with a perfect map, and batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from torch import nn

import xai_widgets as xw
from xai_widgets.metrics.road import (
    NEIGHBOURS,
    ORDERS,
    noisy_linear_imputation,
    pixel_ranks,
    removal_mask,
    road,
    road_outputs,
    ybroad,
)


def ramp(h: int = 20, w: int = 24) -> torch.Tensor:
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([0.1 * rows + 0.2 * cols, -0.3 * rows + 0.05 * cols + 1, 0 * rows + 2]).unsqueeze(0)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_imputation_of_a_linear_ramp_is_exact(solver):
    """A linear function is the weighted mean of its 8 symmetric neighbours; the system's solution is unique."""
    x = ramp()
    torch.manual_seed(0)
    removed = torch.zeros(1, 20, 24, dtype=torch.bool)
    removed[0, 1:-1, 1:-1] = torch.rand(18, 22) < 0.7  # interior only: the border has no symmetric neighbours
    filled = noisy_linear_imputation(x, removed, noise=0.0, solver=solver)
    torch.testing.assert_close(filled, x, atol=1e-7, rtol=0)


def neighbour_mean(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.zeros(1, 1, 3, 3, dtype=x.dtype)
    for dr, dc, weight in NEIGHBOURS:
        kernel[0, 0, 1 + dr, 1 + dc] = weight
    b, c, h, w = x.shape
    sums = F.conv2d(x.reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)
    return sums / F.conv2d(torch.ones(1, 1, h, w, dtype=x.dtype), kernel, padding=1)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_removed_pixels_are_the_weighted_mean_of_their_neighbours_and_kept_pixels_untouched(solver):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    removed = torch.rand(2, 16, 16) < 0.5
    filled = noisy_linear_imputation(x, removed, noise=0.0, solver=solver)
    mask = removed.unsqueeze(1).expand_as(x)
    assert torch.equal(filled[~mask], x[~mask])
    torch.testing.assert_close(filled[mask], neighbour_mean(filled)[mask], atol=1e-7, rtol=0)
    assert (filled[mask] - x[mask]).abs().max() > 0.05  # they were really replaced

    field = torch.randn(x.shape, dtype=x.dtype)
    noisy = noisy_linear_imputation(x, removed, noise=0.01, noise_field=field, solver=solver)
    assert torch.equal(noisy[~mask], x[~mask])
    torch.testing.assert_close(noisy[mask], filled[mask] + 0.01 * field[mask], atol=1e-7, rtol=0)


def test_imputation_equals_the_authors_imputer_including_the_border():
    torch.manual_seed(2)
    x = torch.rand(3, 3, 12, 14)
    removed = torch.rand(3, 12, 14) < 0.6
    ours = noisy_linear_imputation(x, removed, noise=0.0, solver="direct")
    cg = noisy_linear_imputation(x, removed, noise=0.0, solver="cg")
    for i in range(3):
        theirs = NoisyLinearImputer(noise=0.0)(x[i], (~removed[i]).float())
        torch.testing.assert_close(ours[i], theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(cg, ours, atol=1e-4, rtol=0)


def test_removal_masks_take_the_exact_share_from_the_right_end():
    maps = torch.arange(100.0).view(1, 10, 10)
    ranks = pixel_ranks(maps)
    morf = removal_mask(ranks[0], 20, "morf", (10, 10))
    lerf = removal_mask(ranks[0], 20, "lerf", (10, 10))
    assert morf.sum() == 20 and lerf.sum() == 20
    assert torch.equal(morf.flatten(), torch.arange(100) >= 80)
    assert torch.equal(lerf.flatten(), torch.arange(100) < 20)
    ties = removal_mask(pixel_ranks(torch.zeros(1, 10, 10), seed=3)[0], 50, "morf", (10, 10))
    assert ties.sum() == 50 and 0 < ties[:5].sum() < 50  # ties broken at random, not by position


class TextureDetector(nn.Module):
    """Class 0's logit grows with the high-frequency energy of the image (a fixed Laplacian filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, bias=False)
        laplace = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
        with torch.no_grad():
            self.conv.weight.copy_(laplace.expand(1, 3, 3, 3) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = self.conv(x).pow(2).mean((1, 2, 3))
        return torch.stack([100 * (energy - 0.05), torch.zeros_like(energy)], dim=1)


def textured() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth background with a checkerboard patch; the perfect map is the patch."""
    rows, cols = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    patch = (rows >= 6) & (rows < 18) & (cols >= 4) & (cols < 16)
    checker = ((rows + cols) % 2).float()
    x = 0.5 + 0.01 * rows.float() / 24 + patch * (checker - 0.5) * 0.6
    return x.expand(1, 3, 24, 24).clone(), patch.float().unsqueeze(0)


def test_morf_with_a_perfect_map_drops_the_probability_more_than_lerf(guard):
    model = TextureDetector().eval()
    x, perfect = textured()
    with guard(model):
        morf = road(model, x, perfect, target=0, order="morf")
        lerf = road(model, x, perfect, target=0, order="lerf")
    assert morf.shape == lerf.shape == (1, 4)
    assert (morf < lerf).all()
    assert morf[0, -1] < 0.2 < 0.8 < lerf[0, 0]
    scores = ybroad(model, x, torch.stack([perfect, -perfect]), target=0)
    assert scores.score.shape == (2, 1)
    assert scores.score[0, 0] > 0.1 > -0.1 > scores.score[1, 0]
    torch.testing.assert_close(scores.morf[0], morf)
    torch.testing.assert_close(scores.lerf[0], lerf)
    torch.testing.assert_close(scores.score, ((scores.lerf - scores.morf) / 2).mean(-1))


def test_batching_equals_one_by_one_and_the_seed_decides_the_noise(small_cnn):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 12, 12)
    maps = torch.randn(3, 2, 6, 6)  # three maps per image at a lower resolution (resized to 12×12)
    seen = []
    one = ybroad(small_cnn, x, maps, target=[1, 2], batch_size=1)
    many = ybroad(small_cnn, x, maps, target=[1, 2], batch_size=64, progress=lambda d, t: seen.append((d, t)))
    torch.testing.assert_close(one.morf, many.morf, atol=1e-6, rtol=0)
    torch.testing.assert_close(one.lerf, many.lerf, atol=1e-6, rtol=0)
    assert seen == [(48, 48)]
    for i in range(3):
        single = road(small_cnn, x, maps[i], target=[1, 2], order="lerf")
        torch.testing.assert_close(single, many.lerf[i], atol=1e-6, rtol=0)
    other = road(small_cnn, x, maps[0], target=[1, 2], order="lerf", seed=5, noise=0.5)
    assert not torch.allclose(other, many.lerf[0])


def test_bad_arguments_give_clear_errors(small_cnn):
    x, maps = torch.randn(1, 3, 8, 8), torch.rand(1, 8, 8)
    with pytest.raises(xw.InputError, match="between 0 and 100"):
        road(small_cnn, x, maps, percentiles=(0, 50))
    with pytest.raises(xw.InputError, match="morf"):
        road(small_cnn, x, maps, order="best")
    with pytest.raises(xw.InputError, match="N = 1"):
        road(small_cnn, x, torch.rand(2, 8, 8))
    with pytest.raises(xw.TargetError, match="class indices"):
        road(small_cnn, x, maps, target=lambda logits: logits[:, 0])
    with pytest.raises(xw.InputError, match="every pixel"):
        noisy_linear_imputation(x, torch.ones(1, 8, 8, dtype=torch.bool))


def test_batched_solver_equals_the_exact_solve_on_roads_own_masks_and_ignores_the_batch():
    """MoRF/LeRF masks of smooth maps (large removed regions: plain CG's hard case) at 64 px, float32:
    the multigrid-preconditioned CG lies within the stated 1e-4 of scipy's sparse LU, and an image's
    result does not depend on the other images of its batch."""
    torch.manual_seed(5)
    x = torch.rand(8, 3, 64, 64)
    maps = F.interpolate(torch.rand(8, 1, 8, 8), size=(64, 64), mode="bilinear")[:, 0]
    ranks = pixel_ranks(maps)
    removed = torch.stack(
        [removal_mask(ranks[i], (20, 40, 60, 80)[i % 4], ORDERS[i % 2], (64, 64)) for i in range(8)]
    )
    exact = noisy_linear_imputation(x.double(), removed, noise=0.0, solver="direct")
    batched = noisy_linear_imputation(x, removed, noise=0.0, solver="cg")
    assert (batched.double() - exact).abs().max() < 1e-4
    alone = torch.cat([noisy_linear_imputation(x[i : i + 1], removed[i : i + 1], 0.0) for i in (0, 5)])
    torch.testing.assert_close(alone, batched[[0, 5]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(45, 37), (5, 300), (16, 17), (2, 2), (1, 9)])
def test_batched_solver_equals_the_exact_solve_at_odd_and_tiny_sizes(size):
    """Odd sides (padded coarse levels, the cropped prolongation), a strip, the direct coarsest level alone
    (≤ 256 pixels) and one-pixel rows: in float64 the CG reaches the exact solve."""
    torch.manual_seed(6)
    x = torch.rand(3, 2, *size, dtype=torch.float64)
    removed = torch.rand(3, *size) < 0.7
    removed[:, 0, 0] = False  # at least one kept pixel per image
    exact = noisy_linear_imputation(x, removed, noise=0.0, solver="direct")
    batched = noisy_linear_imputation(x, removed, noise=0.0, solver="cg")
    torch.testing.assert_close(batched, exact, atol=1e-9, rtol=0)


def test_road_without_noise_equals_quantus(small_cnn):
    """Quantus's ROAD counts, per percentage, the images whose prediction still equals the label after the
    MoRF removal (its noisy linear imputation is the authors'); with noise 0 and maps without ties ours
    gives the same counts (one channel, 20×20: every percentage is a whole number of pixels)."""
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(6)
    model = type(small_cnn)(channels=1).eval()
    x = torch.rand(12, 1, 20, 20)
    labels = model(x).argmax(1)
    maps = torch.rand(12, 20, 20)
    percentiles = [10, 30, 50, 70, 90]
    _, predicted = road_outputs(
        xw.as_adapter(model), x, maps, labels, percentiles, ("morf",), 0.0, 0, 64, "direct", None
    )
    ours = (predicted[0, :, 0] == labels.view(-1, 1)).double().mean(0)
    theirs = quantus.ROAD(noise=0.0, percentages=percentiles, disable_warnings=True)(
        model=model,
        x_batch=x.numpy(),
        y_batch=labels.numpy(),
        a_batch=maps.unsqueeze(1).numpy(),
        device="cpu",
    )
    assert [theirs[p] for p in percentiles] == pytest.approx(ours.tolist(), abs=0)
    assert ours[0] > ours[-1] and bool(((ours > 0) & (ours < 1)).any())  # a curve, not constant
