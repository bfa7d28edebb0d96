"""The training script: reproducible from its seed, writes weights and metadata that zoo.load reads."""

from __future__ import annotations

import json

import pytest
import torch

from xai_widgets.zoo import models, train


@pytest.fixture
def quick(monkeypatch):
    """The real MLP recipe, cut to two epochs so the test takes seconds."""
    config = {**train.CONFIGS["mnist-mlp-d20"], "epochs": 2}
    monkeypatch.setitem(train.CONFIGS, "mnist-mlp-d20", config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: one thread is fastest
    yield config
    torch.set_num_threads(threads)


def test_training_is_reproducible_and_writes_what_the_zoo_reads(tmp_path, quick):
    first = train.train("mnist-mlp-d20", tmp_path / "a", log=lambda _: None)
    second = train.train("mnist-mlp-d20", tmp_path / "b", log=lambda _: None)
    a = torch.load(tmp_path / "a" / "mnist-mlp-d20.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "mnist-mlp-d20.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float16 for v in a.values())
    assert first["accuracy"] == second["accuracy"] > 0.5
    meta = json.loads((tmp_path / "a" / "mnist-mlp-d20.json").read_text())
    assert meta["settings"]["epochs"] == 2 and meta["seed"] == quick["seed"]
    model = models.ARCHITECTURES["mnist-mlp-d20"]()
    model.load_state_dict({k: v.float() for k, v in a.items()})


def test_every_zoo_model_has_a_recipe():
    assert set(train.CONFIGS) == set(models.ARCHITECTURES)
    seeds = [c["seed"] for c in train.CONFIGS.values()]
    assert len(set(seeds)) == len(seeds)


def test_random_affine_is_a_small_seeded_jitter():
    images = torch.rand(16, 1, 14, 14)
    out = train.random_affine(images, torch.Generator().manual_seed(0))
    again = train.random_affine(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and torch.equal(out, again) and not torch.equal(out, images)
    # a small jitter, not a different picture: most of the ink stays where it was
    assert torch.nn.functional.cosine_similarity(out.flatten(1), images.flatten(1)).min() > 0.6


def test_evaluate_counts_top1_after_normalising():
    class Echo(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    images = torch.eye(4).view(4, 1, 2, 2)  # picture i lights pixel i: Echo predicts class i ...
    labels = torch.tensor([0, 1, 2, 0])  # ... so three of four are right
    assert train.evaluate(Echo(), images, labels, [0.5], [2.0]) == 0.75
