"""Model parameter randomization (Adebayo et al. 2018): which weights each step changes, reproducibility,
the user's model left alone, equivalence with a model holding the weights, and the published picture on the
trained shapes models."""

from __future__ import annotations

import copy

import pytest
import torch
from modelguard import SmallCNN
from torch import nn

import xai_widgets as xw
from xai_widgets import sanity
from xai_widgets.errors import Cancelled, LayerError, MethodError
from xai_widgets.zoo.models import ShapesResNet, ShapesVGG


def _perturbed(model: nn.Module, seed: int = 1) -> nn.Module:
    """A copy whose every parameter and buffer differs from a fresh initialisation (a 'trained' model)."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            tensor.add_(0.1 + 0.05 * torch.rand(tensor.shape, generator=generator))
    return model.eval()


def _changed(model: nn.Module, params: dict) -> set[str]:
    """Names of the parameters/buffers whose value differs from the model's."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    assert own.keys() == params.keys()
    return {name for name, value in own.items() if not torch.equal(value, params[name])}


def _owned(model: nn.Module, layers) -> set[str]:
    names = set()
    for layer in layers:
        module = model.get_submodule(layer)
        names |= {f"{layer}.{n}" for n, p in module.named_parameters(recurse=False)}
    return names


MODELS = {
    "resnet18": lambda: __import__("torchvision").models.resnet18(num_classes=10),
    "shapes-vgg": ShapesVGG,
    "shapes-resnet": ShapesResNet,
}


def _adapter(model):
    size = 64 if isinstance(model, (ShapesVGG, ShapesResNet)) else 32
    return xw.ModelAdapter(model, input_size=(3, size, size))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("granularity", ["layer", "block"])
def test_each_step_changes_exactly_its_layers_and_leaves_the_model_alone(name, granularity, guard):
    torch.manual_seed(0)
    model = _perturbed(MODELS[name]())
    adapter = _adapter(model)
    schedule = sanity.plan(adapter, granularity)
    assert [s.name for s in schedule] == sanity.steps(adapter, granularity)
    assert [s.index for s in schedule] == list(range(1, len(schedule) + 1))
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert schedule[0].layers[0] == head
    all_layers = [layer for step in schedule for layer in step.layers]
    assert len(all_layers) == len(set(all_layers))
    checked = schedule
    if name == "resnet18":  # 41 layers, 11 blocks: the top, the middle and the bottom steps
        checked = [
            schedule[i] for i in sorted({0, 1, 2, len(schedule) // 2, len(schedule) - 2, len(schedule) - 1})
        ]
    with guard(model):
        assert _changed(model, sanity.randomized(adapter, "cascading", 0, granularity)) == set()
        for step in checked:
            top = [layer for s in schedule[: step.index] for layer in s.layers]
            cascading = sanity.randomized(adapter, "cascading", step.index, granularity)
            assert _changed(model, cascading) == _owned(model, top), step.name
            independent = sanity.randomized(adapter, "independent", step.index, granularity)
            assert _changed(model, independent) == _owned(model, step.layers), step.name


def test_sweep_equals_randomized_and_block_steps_equal_layer_steps(guard):
    torch.manual_seed(0)
    model = _perturbed(ShapesResNet())
    adapter = _adapter(model)
    layers = sanity.plan(adapter, "layer")
    blocks = sanity.plan(adapter, "block")
    with guard(model):
        for mode in sanity.MODES:
            for step, params in sanity.sweep(adapter, mode, "block", seed=3):
                index = 0 if step is None else step.index
                expected = sanity.randomized(adapter, mode, index, "block", seed=3)
                assert params.keys() == expected.keys()
                assert all(torch.equal(params[k], expected[k]) for k in params)
        # cascading over blocks = cascading over layers down to the block's lowest layer
        depth = 0
        for block in blocks:
            depth += len(block.layers)
            by_block = sanity.randomized(adapter, "cascading", block.index, "block")
            by_layer = sanity.randomized(adapter, "cascading", depth, "layer")
            assert all(torch.equal(by_block[k], by_layer[k]) for k in by_block)
    assert depth == len(layers)


def test_same_seed_same_weights_on_separate_models_and_global_rng_untouched():
    torch.manual_seed(0)
    first = _adapter(_perturbed(ShapesVGG(), seed=1))
    second = _adapter(_perturbed(ShapesVGG(), seed=2))
    state = torch.get_rng_state()
    a = sanity.randomized(first, "cascading", 3, seed=5)
    b = sanity.randomized(second, "cascading", 3, seed=5)
    c = sanity.randomized(second, "cascading", 3, seed=6)
    assert torch.equal(state, torch.get_rng_state())
    randomized = _owned(first.model, [s.name for s in sanity.plan(first)[:3]])
    for name in randomized:
        assert torch.equal(a[name], b[name]), name
        assert not torch.equal(b[name], c[name]), name
    untouched = set(a) - randomized
    assert all(not torch.equal(a[name], b[name]) for name in untouched if a[name].is_floating_point())


def test_reinitialisation_uses_the_layers_own_initialiser():
    torch.manual_seed(0)
    model = _perturbed(ShapesResNet())
    adapter = _adapter(model)
    params = sanity.randomized(adapter, "cascading", len(sanity.steps(adapter)))
    fan_in = 3 * 3 * 3
    bound = 1 / fan_in**0.5  # kaiming_uniform_(a=√5) of Conv2d.reset_parameters
    assert params["conv1.weight"].abs().max() <= bound
    assert params["conv1.weight"].std() > 0.5 * bound / 3**0.5
    assert torch.equal(params["bn1.weight"], torch.ones_like(model.bn1.weight))
    assert torch.equal(params["bn1.bias"], torch.zeros_like(model.bn1.bias))
    # running statistics are kept by default and reset on request (as in Quantus's MPRT)
    assert torch.equal(params["bn1.running_var"], model.bn1.running_var)
    reset = sanity.randomized(adapter, "cascading", len(sanity.steps(adapter)), reset_bn_stats=True)
    assert torch.equal(reset["bn1.running_var"], torch.ones_like(model.bn1.running_var))
    assert torch.equal(reset["bn1.running_mean"], torch.zeros_like(model.bn1.running_mean))
    assert reset["bn1.running_var"].data_ptr() != model.bn1.running_var.data_ptr()


def test_randomized_weights_behave_like_a_model_that_holds_them(guard):
    """functional_call with the dict gives the logits and maps of a copy with the weights loaded."""
    torch.manual_seed(0)
    model = _perturbed(ShapesResNet())
    adapter = xw.ModelAdapter(model, input_size=(3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    params = sanity.randomized(adapter, "cascading", 4)
    twin = copy.deepcopy(model)
    twin.load_state_dict(params)
    twin_adapter = xw.ModelAdapter(twin, input_size=(3, 32, 32))
    with guard(model):
        torch.testing.assert_close(adapter.logits(x, params), twin_adapter.logits(x))
        for method in ("saliency", "gradcam", "guided_backprop", "rectgrad", "lrp_zplus", "lrp_composite"):
            with adapter.using_params(params):
                ours = xw.explain(adapter, x, target=[0, 1, 2], method=method)
            theirs = xw.explain(twin_adapter, x, target=[0, 1, 2], method=method)
            torch.testing.assert_close(ours.attribution, theirs.attribution, rtol=1e-4, atol=1e-6)


def test_errors_name_what_is_accepted_and_leave_the_model_alone(small_cnn, guard):
    adapter = _adapter(small_cnn)
    with guard(small_cnn):
        with pytest.raises(LayerError, match=r"0\.\.4"):
            sanity.randomized(adapter, "cascading", 5)
        with pytest.raises(MethodError, match="cascading"):
            sanity.randomized(adapter, "top-down", 1)
        with pytest.raises(LayerError, match="granularity"):
            sanity.steps(adapter, "stage")

    class Broken(nn.Linear):
        def reset_parameters(self) -> None:
            if getattr(self, "armed", False):
                raise RuntimeError("initialiser failed")
            super().reset_parameters()

    model = SmallCNN()
    model.fc = Broken(16, 5)
    model.fc.armed = True
    model.eval()
    adapter = _adapter(model)
    with guard(model), pytest.raises(RuntimeError, match="initialiser failed"):
        sanity.randomized(adapter, "cascading", 2)


def test_randomization_test_table_and_cancellation(small_cnn, guard):
    adapter = _adapter(small_cnn)
    x = torch.randn(4, 3, 32, 32)
    calls = []
    with guard(small_cnn):
        table = sanity.randomization_test(
            adapter, x, methods=["saliency", "gradcam"], progress=lambda d, t: calls.append((d, t))
        )
    assert calls[-1] == (10, 10) and len(calls) == 10
    assert list(table.columns) == [
        "step",
        "layer",
        "method",
        "metric",
        "mean",
        "std",
        "accuracy",
        "target_prob",
    ]
    assert len(table) == 5 * 2 * 4
    original = table[table.step == 0]
    assert original["mean"].to_numpy() == pytest.approx(1.0) and original["std"].to_numpy() == pytest.approx(
        0.0, abs=1e-9
    )
    assert (original["accuracy"] == 1).all()
    assert table.layer.unique().tolist() == ["original", *sanity.steps(adapter)]

    def cancel(done, total):
        if done == 3:
            raise Cancelled("stop")

    with guard(small_cnn), pytest.raises(Cancelled):
        sanity.randomization_test(adapter, x, methods=["saliency", "gradcam"], progress=cancel)
    assert adapter._params is None


_PUBLISHED: dict[str, dict] = {}


def _published(name: str) -> dict:
    """Similarity of each method's maps before and after the classifier head is randomized (cascading block
    step 1), and input alignment, on 32 images the shipped model never saw; computed once per model."""
    if name not in _PUBLISHED:
        from modelguard import unchanged

        from xai_widgets import zoo
        from xai_widgets.data.shapes import make_shapes
        from xai_widgets.metrics import compare, input_alignment

        adapter = zoo.load(name, device="cpu")
        batch = make_shapes(32, size=adapter.input_size[-1], seed=2026)
        x = adapter.preprocess(batch.images)
        head = sanity.plan(adapter, "block")[0]
        params = sanity.randomized(adapter, "cascading", 1, "block")
        result = {"head": head.name, "similarity": {}, "alignment": {}}
        with unchanged(adapter.model):
            target = adapter.logits(x).argmax(1)
            result["accuracy"] = float((target == batch.labels).float().mean())
            for method in ("guided_backprop", "lrp_zplus", "saliency", "gradcam"):
                trained = xw.explain(adapter, x, target, method)
                with adapter.using_params(params):
                    randomized = xw.explain(adapter, x, target, method)
                scores = compare(trained, randomized, ("spearman_abs",))["spearman_abs"]
                result["similarity"][method] = float(scores.mean())
                if method in ("guided_backprop", "saliency"):
                    result["alignment"][method] = input_alignment(trained, x)
        _PUBLISHED[name] = result
    return _PUBLISHED[name]


_GRADIENT_ENVELOPE = (
    "the shipped models end in a global pooling bottleneck (ResNet: average, VGG: max) and a small dense head; "
    "the |gradient| for any readout of the pooled features follows the same spatial envelope sum_k |dF_k/dx| "
    "(Spearman 0.73-0.96 with it for the trained head, 0.63-0.93 for random heads), fixed by the trained body, "
    "so after the head is randomized the absolute map stays similar (0.74 on both) while the signed map "
    "decorrelates (Spearman -0.07 / 0.09); Quantus's MPRT gives the same value"
)
_VGG_GBP = (
    "borderline: 0.798 on shapes-vgg, whose head is two dense layers with a ReLU (0.94 on shapes-resnet)"
)


@pytest.mark.parametrize(
    ("name", "method", "stays_similar"),
    [
        pytest.param(
            "shapes-vgg", "guided_backprop", True, marks=pytest.mark.xfail(strict=True, reason=_VGG_GBP)
        ),
        ("shapes-vgg", "lrp_zplus", True),
        pytest.param(
            "shapes-vgg", "saliency", False, marks=pytest.mark.xfail(strict=True, reason=_GRADIENT_ENVELOPE)
        ),
        ("shapes-vgg", "gradcam", False),
        ("shapes-resnet", "guided_backprop", True),
        ("shapes-resnet", "lrp_zplus", True),
        pytest.param(
            "shapes-resnet",
            "saliency",
            False,
            marks=pytest.mark.xfail(strict=True, reason=_GRADIENT_ENVELOPE),
        ),
        ("shapes-resnet", "gradcam", False),
    ],
)
def test_trained_shapes_models_show_the_published_picture(name, method, stays_similar):
    """Adebayo et al.'s finding on the shipped models: once the classifier head is randomized, Guided Backprop
    and LRP-z⁺ maps stay highly similar to the trained ones (mean Spearman of |map| > 0.8), the gradient's and
    Grad-CAM's do not (< 0.5). The deviations are marked, with why (see the report of issue 7)."""
    result = _published(name)
    assert result["head"] in ("classifier", "fc") and result["accuracy"] > 0.9
    similarity = result["similarity"][method]
    if stays_similar:
        assert similarity > 0.8, result["similarity"]
    else:
        assert similarity < 0.5, result["similarity"]


@pytest.mark.parametrize("name", ["shapes-vgg", "shapes-resnet"])
def test_guided_backprop_is_far_more_aligned_with_the_input_than_the_gradient(name):
    """Zheng et al.'s explanation of the picture above: Guided Backprop's map is the input's structure, on
    every one of the 32 images, globally and where the map puts its mass, and far above the shuffled null."""
    alignment = _published(name)["alignment"]
    gbp, grad = alignment["guided_backprop"], alignment["saliency"]
    assert (gbp.cosine > grad.cosine).all(), (gbp.summary(), grad.summary())
    assert (gbp.local > grad.local).all(), (gbp.summary(), grad.summary())
    assert gbp.local.mean() > grad.local.mean() + 0.2, (gbp.summary(), grad.summary())
    assert gbp.cosine.mean() > gbp.null_cosine.mean() + 0.2, gbp.summary()
