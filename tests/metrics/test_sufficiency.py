"""Key information sufficiency on a model whose evidence is known: a colour patch in one corner."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_widgets as xw
from xai_widgets.errors import InputError
from xai_widgets.metrics import edge_map, sufficiency


class CornerModel(nn.Module):
    """Class c ∈ {1, 2} when channel c is bright over the top-left 8×8 patch, class 0 otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x[:, :, :8, :8].mean((2, 3))
        return torch.stack([torch.full_like(means[:, 0], 6.0), 10 * means[:, 1], 10 * means[:, 2]], 1)


def _data(n: int = 8):
    generator = torch.Generator().manual_seed(0)
    x = 0.3 * torch.rand(n, 3, 32, 32, generator=generator)
    labels = 1 + torch.arange(n) % 2
    for i, label in enumerate(labels):
        x[i, label, :8, :8] = 1.0
    evidence = torch.zeros(n, 32, 32)
    evidence[:, :8, :8] = 1.0
    return x, labels, evidence


def test_a_map_on_the_evidence_is_sufficient_and_one_off_it_is_not(guard):
    model = CornerModel().eval()
    x, labels, evidence = _data()
    assert torch.equal(model(x).argmax(1), labels)
    with guard(model):
        on = sufficiency(model, x, evidence)
        off = sufficiency(model, x, 1 - evidence, controls=False)
    assert on.map.ks == (5, 10, 20, 30, 50)
    assert on.map.survived.shape == (8, 5) and on.map.survived.all()
    assert on.map.mean == 1.0
    assert off.map.mean == 0.0 and off.random is None and off.edge is None
    assert on.random.mean < 0.5  # a random 5–50% mask rarely keeps enough of the patch
    assert (on.map.mean_ratio > on.random.mean_ratio).all()
    summary = on.summary()
    assert summary["map_survival"] == 1.0 and set(summary) >= {
        "random_survival",
        "edge_survival",
        "edge_ratio",
    }
    table = on.table()
    assert list(table.columns) == ["curve", "k", "survival", "ratio"] and len(table) == 15


def test_keeping_everything_changes_nothing_and_baselines_differ(guard):
    model = CornerModel().eval()
    x, labels, evidence = _data(4)
    full = sufficiency(model, x, torch.rand(4, 3, 32, 32), ks=(100,))
    assert full.map.survived.all() and torch.allclose(full.map.ratio, torch.ones(4, 1, dtype=torch.float64))
    zero = sufficiency(model, x, evidence, ks=(5,), controls=False, target=labels)
    blurred = sufficiency(model, x, evidence, ks=(5,), baseline="blur", controls=False, target=labels)
    assert not torch.allclose(zero.map.ratio, blurred.map.ratio)


def test_explanations_and_edge_maps():
    model = CornerModel().eval()
    x, labels, _ = _data(4)
    explanation = xw.explain(model, x, target=labels, method="saliency")
    result = sufficiency(model, x, explanation)
    assert result.map.mean == 1.0  # the gradient lives on the patch only
    edges = edge_map(x)
    assert edges.shape == (4, 32, 32) and (edges >= 0).all()
    # the patch's border is an edge: Sobel responds along column 8 of the patch rows
    assert edges[:, 2:6, 7:9].mean() > edges[:, 2:6, 2:6].mean()


def test_bad_arguments_are_rejected():
    model = CornerModel().eval()
    x, _, evidence = _data(2)
    with pytest.raises(InputError, match="ks"):
        sufficiency(model, x, evidence, ks=(0, 10))
    with pytest.raises(InputError, match="baseline"):
        sufficiency(model, x, evidence, baseline="noise")
    with pytest.raises(InputError, match="does not match"):
        sufficiency(model, x, evidence[:, :16])
