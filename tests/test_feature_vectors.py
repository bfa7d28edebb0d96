"""Models of N×D feature vectors: the adapter, explain (gradient, LRP, backtrace), ActSpec, the tabular zoo model."""

from __future__ import annotations

import pytest
import torch
from modelguard import unchanged
from torch import nn

import xai_widgets as xw
from xai_widgets import zoo
from xai_widgets.actspec import spectroscopy
from xai_widgets.data.tabular import load_breast_cancer
from xai_widgets.errors import InputError, MethodError
from xai_widgets.model import ModelAdapter


@pytest.fixture(scope="module")
def tabular():
    adapter = zoo.load("tabular-mlp", device="cpu")
    table = load_breast_cancer("test")
    return adapter, adapter.preprocess(table.features[:6]), table


def test_tabular_zoo_model(tabular):
    adapter, x, table = tabular
    info = zoo.info("tabular-mlp")
    assert info["accuracy"] >= 0.9 and "143 held-out rows" in info["test_set"]
    assert adapter.takes_vectors and adapter.input_size == (30,)
    assert adapter.feature_names == table.feature_names and len(adapter.feature_names) == 30
    assert adapter.labels == ["malignant", "benign"]
    with torch.no_grad():
        predicted = adapter.forward(adapter.preprocess(table.features)).argmax(1)
    assert float((predicted == table.labels).float().mean()) == pytest.approx(info["accuracy"], abs=1e-4)
    assert [layer.kind for layer in adapter.layers()] == [
        "linear",
        "activation",
        "linear",
        "activation",
        "linear",
    ]
    assert not any(layer.spatial for layer in adapter.layers())


def test_prepare_takes_vectors_and_checks_them():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    adapter = ModelAdapter(model, feature_names=["a", "b", "c", "d"])
    assert adapter.input_size == (4,) and adapter.takes_vectors
    assert adapter.prepare(torch.ones(4)).shape == (1, 4)
    with pytest.raises(InputError, match="N×4 feature vectors"):
        adapter.prepare(torch.ones(2, 5))
    with pytest.raises(InputError, match="NaN"):
        adapter.prepare(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    images = ModelAdapter(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(InputError, match="takes images"):
        images.prepare(torch.ones(2, 12))
    assert ModelAdapter(nn.Linear(7, 2)).input_size == (7,)  # the first layer tells the width


@pytest.mark.parametrize(
    "method",
    ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "lrp_epsilon", "lrp_composite",
     "backtrace", "backtrace_contrastive"],
)  # fmt: skip
def test_explain_gives_one_value_per_feature(tabular, method):
    adapter, x, _ = tabular
    with unchanged(adapter.model):
        e = xw.explain(adapter, x, None, method)
    assert e.attribution.shape == x.shape and bool(torch.isfinite(e.attribution).all())


def test_saliency_and_backtrace_values(tabular):
    adapter, x, _ = tabular
    target = adapter.logits(x).argmax(1)
    source = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(adapter.forward(source).gather(1, target[:, None]).sum(), source)
    torch.testing.assert_close(xw.explain(adapter, x, target, "saliency").attribution, grad)
    e = xw.explain(adapter, x, target, "backtrace", multiplier=100)
    total = e.attribution.sum(1) + e.extras["bias_absorbed"]
    torch.testing.assert_close(total, torch.full_like(total, 100.0), rtol=1e-5, atol=0)


def test_image_methods_refuse_vectors(tabular):
    adapter, x, _ = tabular
    for method in ("gradcam", "scorecam"):
        with pytest.raises(MethodError, match="feature\\s+vectors"):
            xw.explain(adapter, x, 0, method)


def test_spectroscopy_on_a_vector_model(tabular):
    adapter, x, _ = tabular
    spectrum = spectroscopy(adapter, "tanh", inputs=x[:2], n_units=6)
    assert spectrum.n == 6 and spectrum.dense.shape == (2**6,)
    assert spectrum.total_weight == pytest.approx(float((spectrum.dense**2).sum()), rel=1e-4)  # Parseval
