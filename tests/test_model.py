"""ModelAdapter: catalogue (one entry per call of a reused module), capture, the output selector, inference
tensors, the per-module adapter cache, validation errors, and that the model is left untouched."""

import copy
import gc
import weakref

import pytest
import torch
import torchvision
from modelguard import SmallCNN
from torch import nn

import xai_widgets as xw
from xai_widgets.model import ModelAdapter, as_adapter


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


# ------------------------------------------------------------------------------------------ output selector
class DictOutput(nn.Module):
    """A classifier returning {"logits": N×K, "features": N×C} as Hugging Face models return their outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return {"features": x.mean(dim=(2, 3)), "logits": self.model(x)}


class Returns(nn.Module):
    """A classifier whose output is ``form(logits)``: a tuple, an object with attributes, a vector, a map."""

    def __init__(self, model: nn.Module, form) -> None:
        super().__init__()
        self.model, self.form = model, form

    def forward(self, x):
        return self.form(self.model(x))


class Output:
    """Like transformers' ModelOutput: the logits as an attribute."""

    def __init__(self, logits):
        self.logits = logits


@pytest.mark.parametrize(
    "form, output",
    [
        (lambda y: {"aux": y.sum(1), "logits": y}, "logits"),
        (lambda y: Output(y), "logits"),
        (lambda y: (y.sum(1), y), 1),
        (lambda y: y[:, :, None, None].expand(-1, -1, 2, 3), lambda y: y.mean(dim=(2, 3))),
    ],
    ids=["dict", "attribute", "tuple", "map"],
)
def test_output_selector_reads_the_logits_for_every_method_path(small_cnn, guard, form, output):
    wrapped = Returns(small_cnn, form)
    adapter = ModelAdapter(wrapped, output=output)
    x = torch.randn(2, 3, 16, 16)
    with guard(wrapped):
        for method, layer in [("saliency", None), ("gradcam", "features.6"), ("lrp_epsilon", None)]:
            got = xw.explain(
                adapter,
                x,
                [1, 2],
                method,
                layer=layer.replace("features", "model.features") if layer else None,
            )
            want = xw.explain(small_cnn, x, [1, 2], method, layer=layer)
            torch.testing.assert_close(got.attribution, want.attribution)
        film = xw.camanim(adapter, x, [1, 2], layers=["model.features.0"])
    assert adapter.num_classes == 5 and film.maps.shape == (1, 2, 16, 16)


@pytest.mark.parametrize(
    "form, advice",
    [
        (lambda y: {"aux": y.sum(1), "logits": y}, r"output='logits'"),
        (lambda y: (y.sum(1), y), r"output=1"),
        (lambda y: y[:, 0], r"one score per sample.*output=lambda y: y\[:, None\]"),
        (lambda y: y[:, :, None, None].expand(-1, -1, 2, 3), r"N×K×H×W.*y\.mean\(dim=\(2, 3\)\)"),
    ],
    ids=["dict", "tuple", "vector", "map"],
)
def test_an_output_that_is_not_logits_says_how_to_select_them(small_cnn, guard, form, advice):
    wrapped = Returns(small_cnn, form)
    with guard(wrapped), pytest.raises(xw.UnsupportedModelError, match=advice):
        xw.explain(wrapped, torch.randn(1, 3, 16, 16), 0, "saliency")
    with pytest.raises(xw.UnsupportedModelError, match="no key or attribute 'logit'"):
        xw.explain(ModelAdapter(DictOutput(small_cnn), output="logit"), torch.randn(1, 3, 16, 16), 0)
    with pytest.raises(xw.InputError, match="a key"):
        ModelAdapter(small_cnn, output=1.5)


# ------------------------------------------------------------------------------- no_grad / inference_mode
def test_inference_tensors_are_copied_and_inference_parameters_raise(guard):
    torch.manual_seed(0)
    with torch.inference_mode():
        built_inside = SmallCNN().eval()
        x = torch.randn(1, 3, 16, 16)
        target = torch.tensor([1])
    with torch.inference_mode(), pytest.raises(xw.UnsupportedModelError, match="inference_mode.*deepcopy"):
        xw.explain(built_inside, x, target, "saliency")
    copied = copy.deepcopy(built_inside)
    with torch.inference_mode():
        e = xw.explain(copied, x, target, "saliency")
    assert not e.attribution.is_inference() and torch.count_nonzero(e.attribution) > 0


# ------------------------------------------------------------------------------- reused modules, per call
def test_each_call_of_a_reused_module_has_its_own_catalogue_entry_and_capture(resnet18, guard):
    """torchvision's BasicBlock runs ``relu`` twice: after bn1, and after ``out += identity``."""
    adapter = ModelAdapter(resnet18, input_size=(3, 32, 32))
    names = [layer.name for layer in adapter.layers()]
    first, last = adapter.resolve_layer("layer2.0.relu#1"), adapter.resolve_layer("layer2.0.relu")
    assert (first.call, last.call, first.calls, last.calls) == (1, 2, 2, 2)
    assert (
        adapter.resolve_layer("layer2.0.relu#2") is last
        and adapter.resolve_layer(resnet18.layer2[0].relu) is last
    )
    assert names.index("layer2.0.bn1") < first.index < names.index("layer2.0.conv2")
    assert names.index("layer2.0.bn2") < last.index < names.index("layer2.0")
    assert first.out_shape == last.out_shape == (128, 4, 4)
    # the calls, their activations and gradients, recorded by hand
    outputs = []

    def keep(module, inputs, output):
        outputs.append(output)
        return output.clone()

    x = torch.randn(2, 3, 32, 32)
    with adapter.no_inplace():
        handle = resnet18.layer2[0].relu.register_forward_hook(keep)
        try:
            score = resnet18(x)[:, 3].sum()
            manual = torch.autograd.grad(score, outputs)
        finally:
            handle.remove()
    with guard(resnet18):
        cap = adapter.capture(x, ["layer2.0.relu#1", "layer2.0.relu"], target=3)
        fired = []
        with adapter.hooks(forward={"layer2.0.relu#1": lambda m, i, o: fired.append(o.shape)}):
            adapter.forward(x)
            adapter.forward(x[:1])
    torch.testing.assert_close(cap.acts["layer2.0.relu#1"], outputs[0].detach())
    torch.testing.assert_close(cap.acts["layer2.0.relu"], outputs[1].detach())
    torch.testing.assert_close(cap.grads["layer2.0.relu#1"], manual[0])
    torch.testing.assert_close(cap.grads["layer2.0.relu"], manual[1])
    assert fired == [(2, 128, 4, 4), (1, 128, 4, 4)]  # once per forward: the first call only
    with guard(resnet18):
        e = xw.explain(resnet18, x, 3, "gradcam", layer="layer2.0.relu#1")
        film = xw.camanim(resnet18, x, 3, kinds=("activation",))
    weights = manual[0].mean(dim=(2, 3))
    torch.testing.assert_close(
        e.layer_map, torch.einsum("nk,nkhw->nhw", weights, outputs[0].detach()).clamp_min(0)
    )
    assert "layer2.0.relu#1" in film.names and film.names.index("layer2.0.relu#1") < film.names.index(
        "layer2.0.relu"
    )


# ----------------------------------------------------------------------------------- adapter per module
def test_a_plain_module_reuses_its_adapter_without_keeping_the_module_alive(guard, monkeypatch):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    builds = []
    build = ModelAdapter._build_catalogue
    monkeypatch.setattr(ModelAdapter, "_build_catalogue", lambda self: builds.append(1) or build(self))
    with guard(model):
        first = xw.explain(model, x, 1, "gradcam")
        for method in ("gradcam", "saliency", "lrp_epsilon"):
            xw.explain(model, x, 1, method)
        film = xw.camanim(model, x, 1)
    assert len(builds) == 1  # one layer catalogue (one dummy forward) for all these calls
    adapter = as_adapter(model)
    assert adapter.model is model and adapter.layers() is as_adapter(model).layers()
    torch.testing.assert_close(xw.explain(adapter, x, 1, "gradcam").attribution, first.attribution)
    # a new head changes the structure: a new catalogue and class count
    model.fc = nn.Linear(16, 3)
    assert as_adapter(model).num_classes == 3 and len(builds) == 1
    assert "fc" in [layer.name for layer in as_adapter(model).layers()] and len(builds) == 2
    # the cache holds the module weakly: an adapter or film that was handed out keeps it, nothing else does
    dead = weakref.ref(model)
    del model, adapter
    gc.collect()
    assert dead() is not None and film.adapter.model is dead()
    del film
    gc.collect()
    assert dead() is None


def test_every_method_runs_the_model_through_the_output_selector(small_cnn, guard):
    """No method calls the module directly: on a model returning a dict, each equals the plain model's map."""
    wrapped = DictOutput(small_cnn)
    adapter = ModelAdapter(wrapped, output="logits")
    x = torch.randn(1, 3, 16, 16)
    quick = {"smoothgrad": {"samples": 2}, "vargrad": {"samples": 2}, "integrated_gradients": {"steps": 4}}
    for info in xw.methods():
        layer = "features.6" if info.needs_layer else None
        options = quick.get(info.name, {})
        try:
            want = xw.explain(small_cnn, x, 1, info.name, layer=layer, **options)
        except (
            xw.UnsupportedModelError
        ):  # e.g. attention rollout on a CNN: the same error through the selector
            with guard(wrapped), pytest.raises(xw.UnsupportedModelError):
                xw.explain(adapter, x, 1, info.name, layer=layer and f"model.{layer}", **options)
            continue
        with guard(wrapped):
            got = xw.explain(adapter, x, 1, info.name, layer=layer and f"model.{layer}", **options)
        torch.testing.assert_close(got.attribution, want.attribution, msg=info.name)
