"""Input alignment (Zheng, Sang and Xu 2025): known answers, the sign property of negative-filtering rules
on random bias-free-first-layer networks, and Guided Backprop's alignment far above the gradient's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_widgets as xw
from xai_widgets.data.shapes import make_shapes
from xai_widgets.errors import InputError
from xai_widgets.metrics import input_alignment


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return (make_shapes(n, size, seed=seed).images - 0.5) / 0.25


def test_known_answers_for_the_input_itself():
    x = _images(4, 32)
    centred = x - x.mean((2, 3), keepdim=True)
    own = input_alignment(centred, x)
    torch.testing.assert_close(own.cosine, torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(input_alignment(-centred, x).cosine, -torch.ones(4, dtype=torch.float64))
    # without centring the global score is the cosine with the raw input (the sign of <map, x>)
    torch.testing.assert_close(input_alignment(x, x, centre=False).cosine, torch.ones(4, dtype=torch.float64))
    # the local score is exact on patch-centred structure; shuffling the patches destroys the alignment
    assert (own.local > 0.99).all()
    assert (own.null_cosine.abs() < 0.4).all() and own.null_cosine.mean() < 0.2
    assert own.gradient_cosine is None


def test_local_score_weights_patches_by_the_maps_mass():
    x = _images(2, 32)
    patch = x[:, :, 8:16, 8:16]
    aligned = torch.zeros_like(x)
    aligned[:, :, 8:16, 8:16] = patch - patch.mean((2, 3), keepdim=True)  # mass in one patch, aligned there
    result = input_alignment(aligned, x, patch=8)
    torch.testing.assert_close(result.local, torch.ones(2, dtype=torch.float64))
    assert (result.cosine < 0.9).all()


def test_times_input_maps_are_divided_by_the_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        centred = x[0] - x[0].mean((1, 2), keepdim=True)
        model[1].weight.copy_(centred.flatten().repeat(4, 1))  # every logit's gradient is x[0], centred
    explanation = xw.explain(model, x, target=1, method="input_x_gradient")
    result = input_alignment(explanation, x)  # input×gradient is recognised and divided by x
    gradient = xw.explain(model, x, target=1, method="saliency")
    # pixels where |x| is negligible are left out of the divided map
    torch.testing.assert_close(result.cosine, input_alignment(gradient, x).cosine, atol=1e-3, rtol=0)
    assert result.cosine[0] == pytest.approx(1.0, abs=1e-3)
    undivided = input_alignment(explanation, x, divide_input=False)
    assert not torch.allclose(undivided.cosine, result.cosine)


def test_gradient_reference_is_the_saliency_maps_score(small_cnn, guard):
    x = _images(3, 32)
    explanation = xw.explain(small_cnn, x, target=[0, 1, 2], method="input_x_gradient")
    with guard(small_cnn):
        result = input_alignment(explanation, x, model=small_cnn)
    saliency = input_alignment(xw.explain(small_cnn, x, target=[0, 1, 2], method="saliency"), x)
    torch.testing.assert_close(result.gradient_cosine, saliency.cosine)
    torch.testing.assert_close(result.gradient_local, saliency.local)
    assert set(result.summary()) == {
        "cosine",
        "local",
        "null_cosine",
        "null_local",
        "gradient_cosine",
        "gradient_local",
    }


def test_bad_input_is_rejected():
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(InputError, match="does not match"):
        input_alignment(torch.randn(2, 3, 8, 8), x)
    with pytest.raises(InputError, match="patch"):
        input_alignment(torch.randn(2, 3, 16, 16), x, patch=32)
    with pytest.raises(InputError, match="Explanation or a tensor"):
        input_alignment([1, 2], x)


class _RandomNet(nn.Module):
    """A random CNN whose first layer is bias-free and followed by a ReLU; later layers have biases."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        width = int(torch.randint(4, 12, (1,), generator=generator))
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 12, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(12 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x))))).flatten(1))


def _random_nets(count: int):
    generator = torch.Generator().manual_seed(0)
    for seed in range(count):
        torch.manual_seed(seed)
        model = _RandomNet(generator).eval()
        with torch.no_grad():
            for module in (model.conv2, model.fc):
                module.bias.normal_(0, 0.5, generator=generator)
        yield xw.ModelAdapter(model, input_size=(3, 16, 16)), generator


def test_negative_filtering_maps_never_point_against_the_input():
    """⟨GBP map, x⟩ ≥ 0 and ⟨RectGrad map, x⟩ ≥ 0 for every input and class on 100 random networks with a
    bias-free first layer (Zheng et al. 2025), while the plain gradient's inner product is negative for some."""
    worst = {"guided_backprop": float("inf"), "rectgrad": float("inf"), "saliency": float("inf")}
    for model, generator in _random_nets(100):
        x = torch.cat(
            [torch.randn(3, 3, 16, 16, generator=generator), _images(2, 16, int(generator.seed()) % 1000)]
        )
        target = torch.randint(0, 5, (5,), generator=generator)
        for method in worst:
            explanation = xw.explain(model, x, target=target, method=method)
            inner = (explanation.pixel.double() * x.double()).flatten(1).sum(1)
            scale = explanation.pixel.double().flatten(1).norm(dim=1) * x.double().flatten(1).norm(dim=1)
            worst[method] = min(worst[method], float((inner / scale.clamp_min(1e-300)).min()))
            if method != "saliency":
                sign = input_alignment(explanation, x, centre=False, null_samples=1).cosine
                assert (sign >= -1e-9).all(), method
    assert worst["guided_backprop"] >= -1e-9
    assert worst["rectgrad"] >= -1e-9
    assert worst["saliency"] < -0.05


def test_guided_backprop_aligns_with_the_input_on_random_networks():
    """On random weights GBP's map is mostly the input (Zheng et al.), the gradient's is not."""
    x = _images(8, 16, seed=3)
    gbp, grad = [], []
    for model, generator in _random_nets(10):
        target = torch.randint(0, 5, (8,), generator=generator)
        gbp.append(
            input_alignment(xw.explain(model, x, target=target, method="guided_backprop"), x).cosine.mean()
        )
        result = input_alignment(xw.explain(model, x, target=target, method="saliency"), x)
        grad.append(result.cosine.mean())
        assert result.null_cosine.abs().mean() < 0.1
    gbp_mean, grad_mean = float(torch.stack(gbp).mean()), float(torch.stack(grad).mean())
    assert gbp_mean > 0.3
    assert gbp_mean > grad_mean + 0.25
