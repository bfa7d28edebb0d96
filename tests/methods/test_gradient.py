"""Gradient family: agreement with Captum, IG completeness, SmoothGrad limits, model left untouched."""

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import nn

import xai_widgets as xw
from xai_widgets.methods import gradient
from xai_widgets.methods.gradient import quadrature_rule

GRADIENT_METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "vargrad"]


def test_saliency_and_input_x_gradient_equal_captum(resnet18, guard):
    x = torch.randn(2, 3, 32, 32)
    target = [3, 7]
    with guard(resnet18):
        ours = xw.explain(resnet18, x, target, "saliency")
        ixg = xw.explain(resnet18, x, target, "input_x_gradient")
    # Captum's Saliency takes |grad| by default; ours is the signed gradient (abs=False)
    theirs = Saliency(resnet18).attribute(x, target=target, abs=False)
    torch.testing.assert_close(ours.pixel, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        ixg.pixel, InputXGradient(resnet18).attribute(x, target=target), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(ours.attribution, theirs.sum(1))


@pytest.mark.parametrize("quad", ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle"])
def test_integrated_gradients_equals_captum_for_the_same_quadrature(small_cnn, quad):
    x = torch.randn(2, 3, 16, 16)
    ours = xw.explain(small_cnn, x, [1, 4], "integrated_gradients", steps=16, quadrature=quad, batch_size=7)
    theirs = IntegratedGradients(small_cnn).attribute(x, target=[1, 4], n_steps=16, method=quad)
    if quad == "riemann_trapezoid":
        # Captum's trapezoid steps are 1/n (sum (n-1)/n); ours are the exact rule's 1/(n-1)
        theirs = theirs * 16 / 15
    torch.testing.assert_close(ours.pixel, theirs, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_is_complete_within_one_percent(resnet18):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    baseline = torch.randn(1, 3, 32, 32) * 0.1
    e = xw.explain(resnet18, x, 4, "integrated_gradients", steps=64, baseline=baseline)
    with torch.no_grad():
        gap = resnet18(x)[:, 4] - resnet18(baseline.expand_as(x))[:, 4]
    total = e.pixel.flatten(1).sum(1)
    assert torch.all((total - gap).abs() <= 0.01 * gap.abs())
    torch.testing.assert_close(e.extras["convergence_delta"], total - gap)


def test_quadrature_integrates_polynomials():
    for method, degree in [("gausslegendre", 9), ("riemann_trapezoid", 1), ("riemann_middle", 1)]:
        alphas, weights = quadrature_rule(5, method)
        assert torch.isclose(
            (weights * alphas**degree).sum(), torch.tensor(1.0 / (degree + 1), dtype=torch.float64)
        )
    with pytest.raises(xw.MethodError, match="unknown quadrature"):
        quadrature_rule(5, "simpson")


def test_smoothgrad_without_noise_is_the_gradient_and_vargrad_is_zero(small_cnn):
    x = torch.randn(2, 3, 16, 16)
    grad = xw.explain(small_cnn, x, 2, "saliency").pixel
    torch.testing.assert_close(xw.explain(small_cnn, x, 2, "smoothgrad", noise=0.0, samples=3).pixel, grad)
    assert torch.count_nonzero(xw.explain(small_cnn, x, 2, "vargrad", noise=0.0, samples=3).pixel) == 0


def test_smoothgrad_is_seeded_and_batched_consistently(small_cnn):
    x = torch.randn(3, 3, 16, 16)
    a = xw.explain(small_cnn, x, 1, "smoothgrad", samples=8, seed=3, batch_size=64).pixel
    b = xw.explain(small_cnn, x, 1, "smoothgrad", samples=8, seed=3, batch_size=64).pixel
    c = xw.explain(small_cnn, x, 1, "smoothgrad", samples=8, seed=4).pixel
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_progress_is_reported_and_cancel_propagates(small_cnn, guard):
    x = torch.randn(1, 3, 16, 16)
    seen = []
    xw.explain(
        small_cnn,
        x,
        0,
        "integrated_gradients",
        steps=8,
        batch_size=4,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(4, 8), (8, 8)]

    def cancel(done, total):
        raise xw.Cancelled("superseded")

    with guard(small_cnn), pytest.raises(xw.Cancelled):
        xw.explain(small_cnn, x, 0, "smoothgrad", samples=4, batch_size=1, progress=cancel)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_every_gradient_method_leaves_the_model_untouched(method, resnet18, small_cnn, guard):
    for model, size in [(resnet18, 32), (small_cnn, 16)]:
        x = torch.randn(2, 3, size, size)
        options = {"steps": 4} if method == "integrated_gradients" else {}
        options.update({"samples": 2} if method in ("smoothgrad", "vargrad") else {})
        with guard(model):
            e = xw.explain(model, x, None, method, **options)
        assert e.attribution.shape == (2, size, size)
        with guard(model), pytest.raises(xw.TargetError):
            xw.explain(model, x, 10**6, method, **options)


def test_a_user_registered_method_appears_and_is_wrapped(small_cnn):
    def occlude_centre(adapter, x, target, size: int = 4):
        """Drop in the target score when the centre is zeroed."""
        masked = x.clone()
        c = x.shape[-1] // 2
        masked[..., c - size : c + size, c - size : c + size] = 0
        with torch.no_grad():
            drop = adapter.score(adapter.forward(x), target) - adapter.score(adapter.forward(masked), target)
        out = torch.zeros(x.shape[0], x.shape[2], x.shape[3])
        out[:, c - size : c + size, c - size : c + size] = drop.view(-1, 1, 1)
        return out

    xw.register_method("centre_occlusion", occlude_centre, cost="cheap")
    try:
        assert "centre_occlusion" in [m.name for m in xw.methods()]
        e = xw.explain(small_cnn, torch.randn(2, 3, 16, 16), 0, "centre_occlusion", size=2)
        assert e.attribution.shape == (2, 16, 16) and e.method == "centre_occlusion"
        with pytest.raises(xw.MethodError, match="already registered"):
            xw.register_method("centre_occlusion", occlude_centre)
    finally:
        xw.unregister_method("centre_occlusion")


def test_a_model_without_convolutions_works():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    x = torch.randn(2, 2, 4, 4)
    e = xw.explain(model, x, 1, "saliency")
    torch.testing.assert_close(e.pixel, model[1].weight[1].view(2, 4, 4).expand(2, -1, -1, -1))


def test_the_default_chunk_follows_the_activation_memory_of_one_row(small_cnn, monkeypatch):
    """IG ran 256 rows per pass whatever the model (resnet50, 224 px, 2 images × 64 steps: 11.9 GB)."""
    import torchvision

    adapter = xw.ModelAdapter(torchvision.models.resnet50().eval(), input_size=(3, 224, 224))
    x = torch.zeros(2, 3, 224, 224)
    per_row = gradient.row_bytes(adapter, x)
    assert 80e6 < per_row < 160e6  # Σ leaf outputs ≈ 122 MB; measured ≈ 106 MB per row (benchmarks/memory.py)
    assert gradient.default_rows(adapter, x) == gradient.ACTIVATION_BUDGET // per_row == 16
    # a 64 px input holds 1/12.25 of the activations: 12.25× the rows
    assert gradient.row_bytes(adapter, torch.zeros(1, 3, 64, 64)) < per_row / 12
    # IG and SmoothGrad run chunks of that many rows (seen through progress)
    small = xw.ModelAdapter(small_cnn)
    x = torch.randn(2, 3, 16, 16)
    small.prepare(x)
    monkeypatch.setattr(gradient, "ACTIVATION_BUDGET", 5 * gradient.row_bytes(small, x))
    for method, options in [("integrated_gradients", {"steps": 6}), ("smoothgrad", {"samples": 6})]:
        seen: list[int] = []
        xw.explain(small, x, 1, method, progress=lambda done, total, seen=seen: seen.append(done), **options)
        assert seen == [5, 10, 12], method


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8"])
@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "vargrad"])
def test_a_bad_batch_size_is_an_error(small_cnn, method, batch_size, guard):
    with guard(small_cnn), pytest.raises(xw.MethodError, match="batch_size must be a positive int"):
        xw.explain(small_cnn, torch.randn(1, 3, 16, 16), 0, method, batch_size=batch_size)


def test_smoothgrad_noise_is_drawn_per_image(small_cnn):
    """An image gets the same noise in any batch, at any position and chunking (it depended on the batch)."""
    torch.manual_seed(3)
    x = torch.randn(3, 3, 16, 16)
    alone = xw.explain(small_cnn, x[1:2], 2, "smoothgrad", samples=5, seed=7).pixel
    for batch, position, rows in [(x, 1, None), (x[[1, 0]], 0, 3), (x[[2, 0, 1]], 2, 1)]:
        ours = xw.explain(small_cnn, batch, 2, "smoothgrad", samples=5, seed=7, batch_size=rows).pixel
        torch.testing.assert_close(ours[position : position + 1], alone, rtol=1e-5, atol=1e-9)
    # different images (or seeds) get different noise, so the same pixels noised differently
    twins = xw.explain(small_cnn, torch.cat([x[:1], x[:1] + 1e-3]), 2, "vargrad", samples=5, seed=7).pixel
    assert not torch.allclose(twins[0], twins[1], rtol=0.1)
    assert gradient.image_seed(7, x[0]) != gradient.image_seed(8, x[0])
    assert gradient.image_seed(7, x[0]) == gradient.image_seed(7, x[0].clone())
