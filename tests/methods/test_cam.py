"""CAM family: agreement with pytorch-grad-cam, known answers on a GAP + linear head, batching, errors and
that the model is left untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from torch import nn

import xai_widgets as xw
from xai_widgets.methods.cam import eigencam_map, upsample
from xai_widgets.model import ModelAdapter

PEERS = {
    "gradcam": GradCAM,
    "gradcam_pp": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
}
ALL = [
    "cam",
    "gradcam",
    "gradcam_pp",
    "xgradcam",
    "layercam",
    "hirescam",
    "scorecam",
    "ablationcam",
    "eigencam",
]


def peer_copy(model: nn.Module) -> nn.Module:
    """pytorch-grad-cam writes parameter .grad and its captured activations are overwritten by in-place
    ReLUs (it keeps a view of the output), so it runs on a copy without in-place modules."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return clone


def minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + 1e-7)).view_as(maps)


def ours_as_peer(explanation: xw.Explanation, size) -> np.ndarray:
    """pytorch-grad-cam's pipeline on our raw layer map: ReLU, min-max (ε = 1e-7), bilinear resize, min-max."""
    return minmax(upsample(minmax(explanation.layer_map.clamp_min(0)), size)).numpy()


def peer_map(cls, model: nn.Module, layer: str, x: torch.Tensor, target: list[int]) -> np.ndarray:
    clone = peer_copy(model)
    with cls(model=clone, target_layers=[clone.get_submodule(layer)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])


@pytest.mark.parametrize("method", list(PEERS))
def test_gradient_cams_equal_pytorch_grad_cam_at_every_conv_of_a_small_cnn(method, small_cnn, guard):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    target = [1, 3]
    convs = [n for n, m in small_cnn.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    for layer in convs:
        with guard(small_cnn):
            ours = xw.explain(small_cnn, x, target, method=method, layer=layer)
        peer = peer_map(PEERS[method], small_cnn, layer, x, target)
        # float32 on both sides, peer in numpy: 1e-5 absolute on maps in [0, 1]
        np.testing.assert_allclose(ours_as_peer(ours, x.shape[-2:]), peer, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", list(PEERS))
def test_gradient_cams_equal_pytorch_grad_cam_at_the_last_block_of_resnet18(method, resnet18, guard):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    with guard(resnet18):
        ours = xw.explain(resnet18, x, [4, 7], method=method, layer="layer4")
    assert ours.layer_map.shape == (2, 2, 2) and ours.attribution.shape == (2, 64, 64)
    peer = peer_map(PEERS[method], resnet18, "layer4", x, [4, 7])
    np.testing.assert_allclose(ours_as_peer(ours, x.shape[-2:]), peer, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", ["features", "features.6"])
def test_cam_equals_gradcam_and_hirescam_on_a_gap_linear_head(layer, small_cnn):
    """Grad-CAM's weights are w_ck / Z on a GAP + linear head, so Grad-CAM = ReLU(CAM) / Z and
    HiResCAM = CAM / Z exactly (Z = h·w)."""
    x = torch.randn(3, 3, 16, 16)
    cam = xw.explain(small_cnn, x, method="cam", layer=layer)
    grad = xw.explain(small_cnn, x, method="gradcam", layer=layer)
    hires = xw.explain(small_cnn, x, method="hirescam", layer=layer)
    z = cam.layer_map.shape[1] * cam.layer_map.shape[2]
    assert cam.layer_map.min() < 0 < cam.layer_map.max()  # CAM keeps its sign
    torch.testing.assert_close(grad.layer_map * z, cam.layer_map.clamp_min(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hires.layer_map * z, cam.layer_map, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cam.extras["weights"], small_cnn.fc.weight[cam.target].detach())


def test_cam_on_resnet18_layer4_and_a_clear_error_for_other_heads(resnet18, guard):
    x = torch.randn(1, 3, 64, 64)
    with guard(resnet18):
        cam = xw.explain(resnet18, x, 2, method="cam", layer="layer4")
    grad = xw.explain(resnet18, x, 2, method="gradcam", layer="layer4")
    torch.testing.assert_close(grad.layer_map * 4, cam.layer_map.clamp_min(0), atol=1e-5, rtol=1e-4)
    with guard(resnet18), pytest.raises(xw.UnsupportedModelError, match="layer4.0.conv1"):
        xw.explain(resnet18, x, 2, method="cam", layer="layer3")
    flat_head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    with guard(flat_head), pytest.raises(xw.UnsupportedModelError, match="global average pool"):
        xw.explain(flat_head, torch.randn(1, 3, 8, 8), method="cam", layer="1")


def test_eigencam_is_the_first_principal_component_with_pytorch_grad_cams_sign():
    torch.manual_seed(3)
    acts = torch.randn(2, 6, 5, 7)
    np.testing.assert_allclose(
        eigencam_map(acts).numpy(), get_2d_projection_with_sign_correction(acts.numpy()), atol=1e-4, rtol=1e-4
    )
    # rank one around a per-channel offset: the map is the centred spatial profile, larger side positive
    profile = torch.zeros(5, 7)
    profile[1, 2] = 3.0
    acts = torch.randn(1, 6, 1, 1).abs() * profile + torch.randn(1, 6, 1, 1)
    expected = profile - profile.mean()
    got = eigencam_map(acts)[0]
    torch.testing.assert_close(got / got.norm(), expected / expected.norm(), atol=1e-5, rtol=1e-5)


def test_eigencam_uses_no_gradient(small_cnn, guard):
    x = torch.randn(1, 3, 16, 16)
    with guard(small_cnn):
        e = xw.explain(small_cnn, x, method="eigencam", layer="features.5")
    assert e.layer_map.shape == (1, 8, 8) and not e.layer_map.requires_grad


def test_scorecam_batching_progress_and_a_direct_computation(small_cnn):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 12, 12)
    seen = []
    one = xw.explain(small_cnn, x, [0, 2], method="scorecam", layer="features.5", batch_size=1)
    many = xw.explain(
        small_cnn,
        x,
        [0, 2],
        method="scorecam",
        layer="features.5",
        batch_size=7,
        progress=lambda done, total: seen.append((done, total)),
    )
    torch.testing.assert_close(one.layer_map, many.layer_map)
    assert seen[-1] == (32, 32) and len(seen) == 5
    # direct: softmax over channels of the target logit of the input masked by each scaled channel
    acts = ModelAdapter(small_cnn).capture(x, ["features.5"], [0, 2], grads=False).acts["features.5"]
    scores = torch.empty(2, 16)
    for n in range(2):
        for k in range(16):
            mask = torch.nn.functional.interpolate(acts[n, k][None, None], size=(12, 12), mode="bilinear")[
                0, 0
            ]
            mask = (mask - mask.min()) / (mask.max() - mask.min() + 1e-8)
            with torch.no_grad():
                scores[n, k] = small_cnn(x[n : n + 1] * mask)[0, [0, 2][n]]
    weights = scores.softmax(1)
    torch.testing.assert_close(many.extras["weights"], weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(many.layer_map, torch.einsum("nk,nkhw->nhw", weights, acts).clamp_min(0))


def test_ablationcam_weights_on_a_gap_linear_head_are_known(small_cnn):
    """Zeroing channel k of the last map lowers the logit by w_ck · mean(A_k): w_k = w_ck · mean(A_k) / |y|."""
    x = torch.randn(2, 3, 12, 12)
    e = xw.explain(small_cnn, x, [1, 4], method="ablationcam", layer="features.6", batch_size=5)
    acts = ModelAdapter(small_cnn).capture(x, ["features.6"], [1, 4], grads=False).acts["features.6"]
    expected = small_cnn.fc.weight[[1, 4]].detach() * acts.mean((2, 3)) / e.score.abs().view(2, 1)
    torch.testing.assert_close(e.extras["weights"], expected, atol=1e-5, rtol=1e-4)
    batched = xw.explain(small_cnn, x, [1, 4], method="ablationcam", layer="features.6", batch_size=32)
    torch.testing.assert_close(batched.layer_map, e.layer_map)


def brute_force_ablation(
    model: nn.Module, module: nn.Module, x: torch.Tensor, target: list[int]
) -> torch.Tensor:
    """y_k for every image and channel: the whole model, one image and one zeroed channel at a time."""
    channels = None
    rows = []
    for s, t in enumerate(target):
        scores = []
        c = 0
        while channels is None or c < channels:

            def zero(mod, inputs, output, c=c):
                nonlocal channels
                channels = output.shape[1]
                output = output.clone()
                output[:, c] = 0
                return output

            handle = module.register_forward_hook(zero)
            with torch.no_grad():
                scores.append(model(x[s : s + 1])[0, t])
            handle.remove()
            c += 1
        rows.append(torch.stack(scores))
    return torch.stack(rows)


class LateConcat(nn.Module):
    """Concatenates an early feature map after the ablated layer: the layer output cannot be expanded alone."""

    def __init__(self):
        super().__init__()
        self.stem, self.body = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        early = torch.relu(self.stem(x))
        late = torch.relu(self.body(early))
        return self.fc(torch.cat([early, late], 1).mean((2, 3)))


@pytest.mark.parametrize("layer", ["layer3.0.conv1", "layer3.0.downsample", "layer3"])
def test_ablationcam_runs_the_shared_prefix_once_and_equals_the_brute_force(layer, resnet18, guard):
    """Inside a residual block, on its shortcut (which cannot broadcast into `out += identity`, so the full
    model runs) and at a block output, the weights equal one full forward per image and channel."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    with guard(resnet18):
        e = xw.explain(resnet18, x, [1, 7], method="ablationcam", layer=layer, batch_size=96)
    module = resnet18.get_submodule(layer)
    ablated = brute_force_ablation(resnet18, module, x, [1, 7])
    expected = (e.score.view(2, 1) - ablated) / e.score.abs().view(2, 1)
    torch.testing.assert_close(e.extras["weights"], expected, atol=1e-4, rtol=1e-4)


def test_ablationcam_falls_back_to_full_forwards_where_the_prefix_cannot_be_shared(guard):
    torch.manual_seed(4)
    model = LateConcat().eval()
    x = torch.randn(2, 3, 8, 8)
    with guard(model):
        e = xw.explain(model, x, [0, 2], method="ablationcam", layer="body", batch_size=4)
    ablated = brute_force_ablation(model, model.body, x, [0, 2])
    expected = (e.score.view(2, 1) - ablated) / e.score.abs().view(2, 1)
    torch.testing.assert_close(e.extras["weights"], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ALL)
def test_every_cam_leaves_the_models_untouched_also_after_an_error(method, small_cnn, resnet18, guard):
    options = {"batch_size": 8} if method in ("scorecam", "ablationcam") else {}
    x = torch.randn(1, 3, 16, 16)
    for model, layer in ((small_cnn, "features.6"), (resnet18, "layer4" if method == "cam" else "layer1")):
        with guard(model):
            e = xw.explain(model, x, 1, method=method, layer=layer, **options)
        assert e.attribution.shape == (1, 16, 16) and torch.isfinite(e.attribution).all()
        with guard(model), pytest.raises(xw.TargetError):
            xw.explain(model, x, 99, method=method, layer=layer)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_cancelling_a_perturbation_cam_propagates_and_restores_the_model(method, small_cnn, guard):
    def cancel(done: int, total: int) -> None:
        raise xw.Cancelled("superseded")

    with guard(small_cnn), pytest.raises(xw.Cancelled):
        xw.explain(small_cnn, torch.randn(1, 3, 12, 12), method=method, layer="features.2", progress=cancel)
    with pytest.raises(xw.MethodError, match="batch_size"):
        xw.explain(small_cnn, torch.randn(1, 3, 12, 12), method=method, layer="features.2", batch_size=0)


@pytest.mark.parametrize("method", ALL)
def test_a_layer_without_spatial_output_is_a_layer_error(method, small_cnn):
    with pytest.raises(xw.LayerError, match="spatial"):
        xw.explain(small_cnn, torch.randn(1, 3, 12, 12), method=method, layer="fc")


def test_cam_methods_are_registered_as_layer_methods():
    infos = {info.name: info for info in xw.methods("cam")}
    assert set(ALL) <= set(infos)
    assert all(infos[name].needs_layer for name in ALL)
    assert infos["gradcam"].signed is False and infos["cam"].signed is True


def test_default_layer_is_the_last_spatial_layer(resnet18):
    e = xw.explain(resnet18, torch.randn(1, 3, 64, 64), method="gradcam")
    assert e.layer == "layer4"
