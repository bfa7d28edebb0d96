"""CAManim: the single pass equals the per-layer maps and pytorch-grad-cam's, one forward + one backward,
local/global normalisation, BatchNorm/activation layers, ROAD per layer, errors, and the model untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import xai_widgets as xw
from xai_widgets.all_layers import CAManimResult, camanim
from xai_widgets.methods.cam import upsample
from xai_widgets.metrics.road import ybroad

PEERS = {
    "gradcam": GradCAM,
    "gradcam_pp": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
}


def small_vgg() -> nn.Module:
    """VGG-like: conv/BatchNorm/ReLU(inplace) stages with max-pooling and a flattening dense head."""

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(*stage(3, 8), *stage(8, 8), nn.MaxPool2d(2), *stage(8, 16), nn.MaxPool2d(2)),
        nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 5)
        ),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def vgg():
    return small_vgg()


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image: subtract the min, divide by (max + 1e-7), per map."""
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + 1e-7)).view_as(maps)


def scaled(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scaling to [0, 1] per map (a map flat to float precision stays flat)."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = (high - low).clamp_min(1e-6 * torch.maximum(high.abs(), low.abs())).clamp_min(1e-30)
    return ((flat - low) / span).view_as(maps)


def peer_copy(model: nn.Module) -> nn.Module:
    """The peer writes parameter .grad and its captures break on in-place ReLU: give it a copy without."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return clone


def peer_map(method: str, clone: nn.Module, layer: str, x: torch.Tensor, target: list[int]) -> np.ndarray:
    with PEERS[method](model=clone, target_layers=[clone.get_submodule(layer)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])


def assert_matches_per_layer(film: CAManimResult, x: torch.Tensor, target) -> None:
    """Each layer of the film equals ``explain`` at that layer (same adapter: its catalogue is built once)."""
    local = film.local()
    for i, name in enumerate(film.names):
        single = xw.explain(film.adapter, x, target, method=film.method, layer=name)
        scale = single.layer_map.abs().max().clamp_min(1e-30)
        torch.testing.assert_close(film.raw[i] / scale, single.layer_map / scale, atol=1e-5, rtol=0)
        torch.testing.assert_close(local[i], scaled(single.attribution), atol=1e-5, rtol=0)


def assert_matches_peer(film: CAManimResult, model: nn.Module, x: torch.Tensor, target: list[int]) -> int:
    compared, clone = 0, peer_copy(model)
    for i, (name, kind) in enumerate(zip(film.names, film.kinds)):
        if kind != "conv":
            continue
        ours = minmax(upsample(minmax(film.raw[i].clamp_min(0)), x.shape[-2:])).numpy()
        np.testing.assert_allclose(ours, peer_map(film.method, clone, name, x, target), atol=1e-5, rtol=0)
        compared += 1
    return compared


@pytest.mark.slow
def test_single_pass_equals_per_layer_maps_and_pytorch_grad_cam_on_resnet18(resnet18, guard):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    with guard(resnet18):
        film = camanim(resnet18, x, target=[3], method="gradcam")
    convs = [n for n, m in resnet18.named_modules() if isinstance(m, nn.Conv2d)]
    assert [n for n, k in zip(film.names, film.kinds) if k == "conv"] == convs
    assert "layer1.0" in film.names and film.names.index("layer1.0.conv2") < film.names.index("layer1.0")
    assert film.maps.shape == (len(film), 1, 64, 64)
    assert film.resolutions[0] == (32, 32) and film.resolutions[-1] == (2, 2)
    assert_matches_per_layer(film, x, [3])
    assert assert_matches_peer(film, resnet18, x, [3]) == 20


@pytest.mark.parametrize("method", list(PEERS))
def test_single_pass_on_a_vgg_equals_per_layer_maps_and_pytorch_grad_cam(method, vgg, guard):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    kinds = ("conv", "norm", "activation", "pool", "block")
    with guard(vgg):
        film = camanim(vgg, x, target=[1, 4], method=method, kinds=kinds)
    assert (
        film.kinds.count("norm") == 3
        and film.kinds.count("activation") == 3
        and film.kinds.count("pool") == 2
    )
    assert_matches_per_layer(film, x, [1, 4])
    assert assert_matches_peer(film, vgg, x, [1, 4]) == 3


def test_batchnorm_and_activation_layers_of_resnet18(resnet18, guard):
    x = torch.randn(1, 3, 32, 32)
    with guard(resnet18):
        film = camanim(resnet18, x, method="gradcam", kinds=("norm", "activation"))
    assert {"bn1", "relu", "layer1.0.bn2", "layer1.0.relu", "layer4.1.bn2"} <= set(film.names)
    # 20 BatchNorms, the stem ReLU and both calls of each of the 8 blocks' ReLU (``layer1.0.relu#1``, then the
    # bare name for the call after ``out += identity``)
    assert set(film.kinds) == {"norm", "activation"} and len(film) == 37
    assert (
        film.names.index("layer1.0.relu#1")
        < film.names.index("layer1.0.bn2")
        < film.names.index("layer1.0.relu")
    )
    assert all(torch.isfinite(m).all() for m in film.raw)
    # the reused in-place ReLU of a block (its last call), the BatchNorm before `out += identity`, the stem
    chosen = camanim(resnet18, x, method="gradcam", layers=["layer1.0.relu", "layer2.1.bn2", "bn1", "relu"])
    assert chosen.names == ["bn1", "relu", "layer1.0.relu", "layer2.1.bn2"]
    for name in chosen.names:
        torch.testing.assert_close(chosen.raw[chosen.names.index(name)], film.raw[film.names.index(name)])
    assert_matches_per_layer(chosen, x, film.target)


def test_gradient_methods_take_one_forward_and_one_backward_eigencam_no_backward(vgg, monkeypatch):
    calls = {"forward": 0, "grad": 0}
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["grad"] += 1
        return grad(*args, **kwargs)

    def count_forward(module, inputs):
        calls["forward"] += 1

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    model = copy.deepcopy(vgg)
    model.register_forward_pre_hook(count_forward)
    x = torch.randn(1, 3, 16, 16)
    adapter = xw.ModelAdapter(model, input_size=(3, 16, 16))
    adapter.layers(), adapter.num_classes  # the catalogue's own forwards are not part of the count
    calls.update(forward=0, grad=0)
    film = camanim(adapter, x, target=2, method="gradcam", kinds=("conv", "norm", "activation", "pool"))
    assert len(film) == 11 and calls == {"forward": 1, "grad": 1}
    calls.update(forward=0, grad=0)
    camanim(adapter, x, target=2, method="eigencam")
    assert calls == {"forward": 1, "grad": 0}


def test_local_and_global_normalisation(vgg):
    x = torch.randn(2, 3, 16, 16)
    film = camanim(vgg, x, method="hirescam", kinds=("conv", "activation"))
    local, global_ = film.local(), film.normalized("global")
    flat = film.maps.transpose(0, 1).flatten(1)  # per sample, all layers together, before any normalisation
    low, high = flat.min(1).values.view(1, 2, 1, 1), flat.max(1).values.view(1, 2, 1, 1)
    torch.testing.assert_close(global_, (film.maps - low) / (high - low))
    assert torch.allclose(local.amax((2, 3)), torch.ones(len(film), 2))
    assert torch.allclose(local.amin((2, 3)), torch.zeros(len(film), 2))
    assert torch.allclose(global_.flatten(2).amax((0, 2)), torch.ones(2))
    assert global_.flatten(2).amax(2).min() < 0.99  # some layer is weaker than the strongest: global ≠ local
    frames = film.frames("global", sample=1)
    assert frames.dtype == torch.uint8 and frames.shape == (len(film), 16, 16)
    with pytest.raises(xw.InputError, match="local"):
        film.normalized("per-layer")


def test_eigencam_and_scorecam_films_equal_their_per_layer_maps(vgg, guard):
    x = torch.randn(1, 3, 16, 16)
    with guard(vgg):
        film = camanim(vgg, x, method="eigencam")
    assert_matches_per_layer(film, x, film.target)
    seen = []
    with guard(vgg):
        film = camanim(
            vgg,
            x,
            method="scorecam",
            kinds=("conv",),
            batch_size=5,
            progress=lambda d, t: seen.append((d, t)),
        )
    assert seen[-1] == (8 + 8 + 16, 8 + 8 + 16) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    for i, name in enumerate(film.names):
        single = xw.explain(vgg, x, film.target, method="scorecam", layer=name)
        torch.testing.assert_close(film.raw[i], single.layer_map)


def test_road_scores_every_layer_and_marks_the_best(vgg):
    x = torch.randn(2, 3, 16, 16)
    film = camanim(vgg, x, target=[0, 3], method="gradcam")
    scores = film.road(batch_size=16)
    assert scores.score.shape == (len(film), 2) and scores.morf.shape == (len(film), 2, 4)
    direct = ybroad(vgg, x, film.maps, target=[0, 3])
    torch.testing.assert_close(scores.score, direct.score)
    assert torch.equal(scores.best, scores.score.argmax(0))
    assert scores.best_layer(1) == film.names[int(scores.score[:, 1].argmax())]


def test_errors_and_the_model_untouched_after_them(vgg, guard):
    x = torch.randn(1, 3, 16, 16)

    def cancel(done: int, total: int) -> None:
        raise xw.Cancelled("superseded")

    with guard(vgg):
        with pytest.raises(xw.Cancelled):
            camanim(vgg, x, method="ablationcam", progress=cancel)
        with pytest.raises(xw.MethodError, match="gradcam"):
            camanim(vgg, x, method="cam")
        with pytest.raises(xw.MethodError, match="layer method"):
            camanim(vgg, x, method="saliency")
        with pytest.raises(xw.LayerError, match="spatial"):
            camanim(vgg, x, layers=["0.0", "1.1"])
        with pytest.raises(xw.LayerError, match="unknown layer kind"):
            camanim(vgg, x, kinds=("convolution",))
        with pytest.raises(xw.TargetError):
            camanim(vgg, x, target=9)
    film = camanim(vgg, x, layers=["0.4", "0.0"])
    assert film.names == ["0.0", "0.4"]  # forward order, whatever order they were asked in


def test_a_user_registered_cam_films_layer_by_layer_and_a_multi_layer_one_in_one_pass(vgg, guard):
    def max_grad_cam(adapter, x, target, layer):
        capture = adapter.capture(x, [layer], target)
        acts, grads = capture.acts[layer], capture.grads[layer]
        return torch.einsum("nk,nkhw->nhw", grads.amax(dim=(2, 3)), acts).clamp_min(0)

    def all_at_once(adapter, x, target, layers):
        calls.append(list(layers))
        capture = adapter.capture(x, layers, target)
        maps = {
            n: torch.einsum("nk,nkhw->nhw", capture.grads[n].amax(dim=(2, 3)), capture.acts[n]).clamp_min(0)
            for n in layers
        }
        return maps, capture.score

    calls: list = []
    xw.register_method("max_grad_cam", max_grad_cam, family="cam", needs_layer=True)
    xw.register_method(
        "max_grad_cam_1", max_grad_cam, family="cam", needs_layer=True, multi_layer=all_at_once
    )
    x = torch.randn(2, 3, 16, 16)
    try:
        with guard(vgg):
            film = camanim(vgg, x, [1, 2], method="max_grad_cam")
            fast = camanim(vgg, x, [1, 2], method="max_grad_cam_1")
        assert_matches_per_layer(film, x, film.target)
    finally:
        xw.unregister_method("max_grad_cam")
        xw.unregister_method("max_grad_cam_1")
    assert calls == [film.names] and fast.names == film.names
    for a, b in zip(film.raw, fast.raw):
        torch.testing.assert_close(a, b)
