"""ModelAdapter: catalogue, capture, validation errors, and that the model is left untouched."""

import pytest
import torch
import torchvision
from torch import nn

import xai_widgets as xw
from xai_widgets.model import ModelAdapter


def test_catalogue_is_in_forward_order_with_shapes(resnet18):
    adapter = ModelAdapter(resnet18, input_size=(3, 64, 64))
    names = [layer.name for layer in adapter.layers()]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert names.index("layer1.0.conv2") < names.index("layer1.0") < names.index("layer1.1.conv1")
    assert adapter.resolve_layer("layer4").out_shape == (512, 2, 2)
    assert adapter.resolve_layer("layer1.0.relu").calls == 2
    assert adapter.default_cam_layer().name == "layer4"
    assert adapter.num_classes == 10


def test_capture_matches_a_manual_forward_and_is_not_corrupted_by_inplace_ops(resnet18, guard):
    adapter = ModelAdapter(resnet18, input_size=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with guard(resnet18):
        cap = adapter.capture(x, ["layer1.0.bn2", "layer1.0", "fc"], target=[1, 2])
    # bn2's output is the residual branch before `out += identity`: recompute it by hand
    block = resnet18.layer1[0]
    with torch.no_grad():
        h = resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(x))))
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    torch.testing.assert_close(cap.acts["layer1.0.bn2"], branch)
    torch.testing.assert_close(cap.acts["fc"], cap.logits)
    onehot = torch.zeros_like(cap.logits)
    onehot[0, 1] = onehot[1, 2] = 1
    torch.testing.assert_close(cap.grads["fc"], onehot)
    assert all(p.grad is None for p in resnet18.parameters())


def test_activation_gradients_reach_a_frozen_model(small_cnn, guard):
    """A model whose parameters all have requires_grad=False (a common fine-tuning set-up) still gives layer
    gradients and CAMs, and keeps its flags."""
    small_cnn.requires_grad_(False)
    adapter = ModelAdapter(small_cnn, input_size=(3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    with guard(small_cnn):
        cap = adapter.capture(x, ["features.6"], target=[1, 2])
        cam = xw.explain(adapter, x, [1, 2], "gradcam", layer="features.6")
    assert cap.grads["features.6"] is not None and torch.count_nonzero(cap.grads["features.6"]) > 0
    assert torch.count_nonzero(cam.attribution) > 0
    assert not any(p.requires_grad for p in small_cnn.parameters())


def test_params_override_leaves_the_module_alone(small_cnn, guard):
    adapter = ModelAdapter(small_cnn, input_size=(3, 16, 16))
    params = {k: torch.zeros_like(v) for k, v in small_cnn.named_parameters()}
    x = torch.randn(1, 3, 16, 16)
    with guard(small_cnn):
        out = adapter.forward(x, params)
    assert torch.count_nonzero(out) == 0
    assert torch.count_nonzero(adapter.forward(x)) > 0


def test_mask_units_returns_the_replacement(small_cnn, guard):
    adapter = ModelAdapter(small_cnn, input_size=(3, 16, 16))
    x = torch.randn(1, 3, 16, 16)
    mask = torch.ones(1, 16, 1, 1, dtype=torch.bool)
    with guard(small_cnn), adapter.mask_units("features.6", mask, torch.zeros(1)):
        out = adapter.forward(x)
    torch.testing.assert_close(out, small_cnn.fc.bias.expand(1, -1))


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.randn(2, 2, 3, 16, 16), "N×C×H×W"),
        (torch.randn(16, 16), "N×C×H×W"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "float"),
        (torch.randn(1, 1, 16, 16), "3 input channels"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        ("cat.png", "torch.Tensor"),
    ],
)
def test_bad_images_raise_clear_errors(small_cnn, guard, x, message):
    with guard(small_cnn), pytest.raises(xw.InputError, match=message):
        xw.explain(small_cnn, x, 0, "saliency")


def test_bad_targets_methods_layers_and_options(small_cnn, guard):
    x = torch.randn(2, 3, 16, 16)
    with guard(small_cnn):
        with pytest.raises(xw.TargetError, match="out of range"):
            xw.explain(small_cnn, x, 5)
        with pytest.raises(xw.TargetError, match="2 images"):
            xw.explain(small_cnn, x, [0, 1, 2])
        with pytest.raises(xw.TargetError, match="integer"):
            xw.explain(small_cnn, x, 1.5)
        with pytest.raises(xw.MethodError, match="known methods: .*saliency"):
            xw.explain(small_cnn, x, 0, "salency")
        with pytest.raises(xw.MethodError, match="accepted: .*steps"):
            xw.explain(small_cnn, x, 0, "integrated_gradients", n_step=3)
    adapter = ModelAdapter(small_cnn, input_size=(3, 16, 16))
    with pytest.raises(xw.LayerError, match=r"did you mean 'features\.\d'"):
        adapter.resolve_layer("features.O")


def test_model_in_train_mode_is_explained_in_eval_and_restored(guard):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model.train()
    x = torch.randn(4, 3, 2, 2)
    with guard(model):
        a = xw.explain(model, x, 1).attribution
        b = xw.explain(model, x, 1).attribution
    torch.testing.assert_close(a, b)
    assert model.training


def test_device_follows_the_model():
    model = torchvision.models.resnet18(num_classes=3)
    assert ModelAdapter(model).device == next(model.parameters()).device
