"""Feature bars, the relevance-flow chart, the contrastive pair, and the explorer on a model of feature vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xai_widgets as xw
from xai_widgets.data.tabular import load_breast_cancer
from xai_widgets.errors import InputError
from xai_widgets.model import ModelAdapter
from xai_widgets.widgets import AttributionExplorer
from xai_widgets.widgets.feature_bars import (
    NEGATIVE,
    POSITIVE,
    ContrastivePair,
    FeatureBars,
    RelevanceFlow,
    ranked,
)
from xai_widgets.widgets.heatmap import HeatmapView


def _adapter() -> ModelAdapter:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    return ModelAdapter(model, feature_names=["age", "height", "weight", "income"], labels=["a", "b", "c"])


def test_ranked_sorts_by_magnitude_and_keeps_signs():
    names, values = ranked(torch.tensor([0.1, -3.0, 2.0, 0.0]), ["a", "b", "c", "d"], top=3)
    assert names == ["b", "c", "a"] and values.tolist() == pytest.approx([-3.0, 2.0, 0.1])
    with pytest.raises(InputError, match="2 feature names for 4 values"):
        ranked(torch.zeros(4), ["a", "b"])


def test_feature_bars_show_an_explanation():
    adapter = _adapter()
    e = xw.explain(
        adapter, torch.randn(2, 4, generator=torch.Generator().manual_seed(1)), 2, "backtrace_contrastive"
    )
    bars = FeatureBars(adapter.feature_names, top=3)
    bars.show(e, index=1)
    expected_names, expected = ranked(e.attribution[1], adapter.feature_names, 3)
    assert list(bars.bars.x) == expected_names and np.allclose(bars.bars.y, expected)
    assert list(bars.bars.colors) == [POSITIVE if v >= 0 else NEGATIVE for v in expected]
    assert "backtrace_contrastive" in bars.title.value
    bars.update(error="boom", progress=0.5)
    assert "boom" in bars.error.value and bars.progress.layout.visibility == "visible"
    with pytest.raises(InputError, match="display setting"):
        bars.update(colormap="red")
    image = xw.explain(
        nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(72, 2)), torch.randn(1, 3, 8, 8), 0
    )
    with pytest.raises(InputError, match="HeatmapView"):
        bars.show(image)


def test_relevance_flow_and_contrastive_pair():
    adapter = _adapter()
    e = xw.explain(
        adapter, torch.randn(1, 4, generator=torch.Generator().manual_seed(2)), 0, "backtrace_contrastive"
    )
    flow = RelevanceFlow()
    flow.show(e)
    ledger = e.extras["ledger"]
    assert list(flow.bars.x) == list(ledger)
    reached = np.array([float(row["reached"][0]) for row in ledger.values()])
    assert np.allclose(np.asarray(flow.bars.y).sum(0), reached, atol=1e-6)
    assert "start relevance 1" in flow.summary.value
    flow.show(e, stream="negative")
    assert list(flow.bars.x) == list(e.extras["ledger_negative"])
    pair = ContrastivePair(adapter.feature_names)
    pair.show(e)
    assert len(pair.children) == 3 and all(isinstance(v, FeatureBars) for v in pair.children)
    assert np.allclose(sorted(pair.children[2].bars.y), sorted(e.attribution[0].numpy()))
    plain = xw.explain(adapter, torch.randn(1, 4), 0, "backtrace")
    pair.show(plain)
    assert "no contrastive streams" in pair.error.value
    flow.show(xw.explain(adapter, torch.randn(1, 4), 0, "saliency"))
    assert "no positive relevance ledger" in flow.error.value


def test_contrastive_pair_of_pictures():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    e = xw.explain(model.eval(), torch.randn(1, 3, 8, 8), 1, "backtrace_contrastive")
    pair = ContrastivePair(size=64)
    pair.show(e, image=torch.rand(3, 8, 8))
    assert len(pair.children) == 3 and all(isinstance(v, HeatmapView) for v in pair.children)
    assert pair.children[2].map is not None


def test_explorer_shows_feature_bars_for_vectors():
    table = load_breast_cancer("test")
    rows = {f"row {i}": table.features[i] for i in range(2)}
    explorer = AttributionExplorer("tabular-mlp", rows, methods=["backtrace", "gradcam"], background=False)
    explorer.wait()
    bars, cam = explorer.views["backtrace"], explorer.views["gradcam"]
    assert isinstance(bars, FeatureBars) and len(bars.bars.x) == bars.top
    assert set(bars.bars.x) <= set(table.feature_names)
    assert "feature vectors" in cam.error.value  # the CAM says in words why it has no map
    assert list(explorer.bars.x)  # the predictions chart still works
    with pytest.raises(InputError, match="takes 30 features"):
        explorer.set_image(torch.zeros(5), "short row")
