"""zoo.load / zoo.info / zoo.names: shipped weights, offline, ready adapters with the documented architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xai_widgets import ModelAdapter, XAIError, zoo
from xai_widgets.data import SHAPE_CLASSES
from xai_widgets.zoo.models import ARCHITECTURES, BasicBlock

SHAPES = ["shapes-vgg", "shapes-resnet", "shapes-leaky"]
MLPS = {"mnist-mlp-d0": 0.0, "mnist-mlp-d20": 0.2, "mnist-mlp-d50": 0.5}


def test_names():
    assert zoo.names() == SHAPES + list(MLPS) + ["shapes-vit", "tabular-mlp"]


def test_weights_ship_in_the_package_under_five_megabytes():
    files = sorted(zoo.WEIGHTS_DIR.glob("*.pt"))
    assert [f.stem for f in files] == sorted(zoo.names())
    assert sum(f.stat().st_size for f in zoo.WEIGHTS_DIR.iterdir()) < 5_000_000
    for name in zoo.names():
        state = torch.load(zoo.WEIGHTS_DIR / f"{name}.pt", weights_only=True, map_location="cpu")
        assert state.keys() == ARCHITECTURES[name]().state_dict().keys()


@pytest.mark.parametrize("name", SHAPES + list(MLPS))
def test_load_offline_gives_a_ready_adapter(no_network, name):
    adapter = zoo.load(name, device="cpu")
    assert isinstance(adapter, ModelAdapter) and adapter.name == name
    assert not any(module.training for module in adapter.model.modules())
    assert all(p.dtype == torch.float32 for p in adapter.model.parameters())
    assert adapter.device == torch.device("cpu")
    meta = zoo.info(name)
    assert adapter.info == meta
    assert list(adapter.input_size) == meta["input_size"] and adapter.labels == meta["labels"]
    assert adapter.mean == tuple(meta["mean"]) and adapter.std == tuple(meta["std"])
    x = torch.rand(2, *adapter.input_size)
    assert adapter.logits(adapter.preprocess(x)).shape == (2, len(adapter.labels))


def test_default_device_is_the_best_one():
    adapter = zoo.load("mnist-mlp-d0")
    assert adapter.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", SHAPES + list(MLPS))
def test_info_tells_how_it_was_trained(name):
    meta = zoo.info(name)
    for key in ("accuracy", "test_set", "training_data", "seed", "settings", "architecture", "parameters"):
        assert key in meta, key
    assert meta["accuracy"] >= (0.97 if name in SHAPES else 0.95)
    assert {"epochs", "lr", "batch_size", "optimizer"} <= meta["settings"].keys()
    assert meta["reproduce"] == f"python -m xai_widgets.zoo.train {name}"
    assert meta["parameters"] == sum(p.numel() for p in ARCHITECTURES[name]().parameters()) <= 400_000
    meta["accuracy"] = -1  # a copy: the zoo's record is not changed by the caller
    assert zoo.info(name)["accuracy"] >= 0.95


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(XAIError, match="shapes-resnet"):
        zoo.load("resnet50")
    with pytest.raises(XAIError, match="mnist-mlp-d50"):
        zoo.info("mnist")


def test_shapes_models_end_in_an_eight_by_eight_map():
    for name in SHAPES:
        adapter = zoo.load(name, device="cpu")
        assert adapter.labels == list(SHAPE_CLASSES)
        assert adapter.default_cam_layer().out_shape[1:] == (8, 8)


def test_resnet_has_the_hard_cases():
    """Reused in-place activation (twice per block) and a residual add: the catalogue counts the calls."""
    for name, act in (("shapes-resnet", nn.ReLU), ("shapes-leaky", nn.LeakyReLU)):
        adapter = zoo.load(name, device="cpu")
        blocks = [m for m in adapter.model.modules() if isinstance(m, BasicBlock)]
        assert blocks and all(isinstance(b.relu, act) and b.relu.inplace for b in blocks)
        assert any(isinstance(m, nn.BatchNorm2d) for m in adapter.model.modules())
        reused = [layer for layer in adapter.layers() if layer.name.endswith(".relu")]
        assert reused and all(layer.calls == 2 for layer in reused)
    leaky = [m for m in zoo.load("shapes-leaky", device="cpu").model.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.01 for m in leaky)
    assert not any(type(m) is nn.ReLU for m in zoo.load("shapes-leaky", device="cpu").model.modules())


def test_vgg_is_a_plain_stack_with_a_dense_head():
    model = zoo.load("shapes-vgg", device="cpu").model
    kinds = {type(m) for m in model.features}
    assert kinds == {nn.Conv2d, nn.ReLU, nn.MaxPool2d}
    assert sum(isinstance(m, nn.Linear) for m in model.classifier) == 2


@pytest.mark.parametrize(("name", "p"), MLPS.items())
def test_mlps_have_readable_layers_and_their_dropout(name, p):
    adapter = zoo.load(name, device="cpu")
    assert [n for n, _ in adapter.model.named_children()] == ["flatten", "fc1", "relu", "dropout", "fc2"]
    assert adapter.model.fc1.in_features == 196 and adapter.model.fc1.out_features == 256
    assert adapter.model.dropout.p == p
    assert adapter.input_size == (1, 14, 14) and adapter.labels == [str(d) for d in range(10)]
    assert adapter.resolve_layer("relu").out_shape == (256,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_on_cuda():
    adapter = zoo.load("shapes-resnet", device="cuda")
    x = adapter.preprocess(torch.rand(2, 3, 64, 64))
    assert x.is_cuda and adapter.logits(x).is_cuda
