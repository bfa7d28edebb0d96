"""Activation maximization and the backward-slope rule (xai_widgets/activation_max.py,
xai_widgets/methods/backward_slope.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from modelguard import unchanged
from torch import nn

import xai_widgets as xw
from xai_widgets.activation_max import dataset_examples, maximize, race_of_patterns, saturation
from xai_widgets.methods.backward_slope import BackwardSlope


# ------------------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4).eval()


@pytest.fixture(scope="module")
def leaky() -> xw.ModelAdapter:
    return xw.zoo.load("shapes-leaky", device="cpu")


class Functional(nn.Module):
    """Every functional spelling of ReLU/Leaky ReLU, in place or not, outside activation modules; no pooling
    other than the final mean, so with identity activations the network is affine."""

    def __init__(self, identity: bool = False) -> None:
        super().__init__()
        self.identity = identity
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(6))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acts = [
            F.relu,
            torch.relu,
            lambda t: t.relu(),
            lambda t: t.relu_(),
            lambda t: F.relu(t, inplace=True),
            lambda t: F.leaky_relu(t, 0.2, inplace=True),
        ]
        for conv, act in zip(self.convs, acts):
            x = conv(x)
            x = x if self.identity else act(x)
        return self.fc(x.mean((2, 3)))


def input_gradient(model: nn.Module, x: torch.Tensor, slope: float | None = None) -> tuple:
    adapter = xw.ModelAdapter(model)
    source = x.clone().requires_grad_(True)
    with adapter.backward_slope(slope) if slope is not None else torch.enable_grad():
        logits = model(source)
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), source)
    return logits.detach(), grad


class StraightThrough(nn.Module):
    """Forward: the activation; backward: Leaky ReLU with slope s (the paper's proxy, built by hand)."""

    def __init__(self, act: nn.Module, slope: float) -> None:
        super().__init__()
        self.act, self.slope = act, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proxy = F.leaky_relu(x, self.slope)
        return proxy - proxy.detach() + self.act(x.clone()).detach()


def replace_activations(model: nn.Module, make) -> nn.Module:
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, (nn.ReLU, nn.LeakyReLU)):
                setattr(module, name, make(child))
    return model


# ------------------------------------------------------------------------------------ the rule
def _rule_invariants(model: nn.Module, x: torch.Tensor, forward_slope: float) -> None:
    logits, grad = input_gradient(model, x)
    proxy = replace_activations(model, lambda act: StraightThrough(copy.deepcopy(act), forward_slope))
    with unchanged(model):
        for slope in (forward_slope, 0.1, 0.3, 1.0):
            out, g = input_gradient(model, x, slope)
            assert torch.equal(out, logits), f"forward changed with backward slope {slope}"
            if slope == forward_slope:
                assert torch.equal(g, grad), "the model's own slope must give exactly autograd's gradient"
            else:
                assert not torch.allclose(g, grad)
            for module in proxy.modules():
                if isinstance(module, StraightThrough):
                    module.slope = slope
            torch.testing.assert_close(g, input_gradient(proxy, x)[1], rtol=1e-5, atol=1e-6)
    # slope 1: the gradient of the same network with identity activations (max-pooling, the only other
    # nonlinearity, removed from both so the comparison is exact)
    pooled = copy.deepcopy(model)
    pooled.maxpool = nn.Identity()
    _, g = input_gradient(pooled, x, 1.0)
    _, linear = input_gradient(replace_activations(pooled, lambda act: nn.Identity()), x)
    torch.testing.assert_close(g, linear, rtol=1e-4, atol=1e-5)


def test_rule_invariants_on_torchvision_resnet(resnet):
    """resnet18 reuses one in-place ReLU per block: all three invariants hold there."""
    _rule_invariants(resnet, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), 0.0)


def test_rule_invariants_on_leaky_model(leaky):
    x = leaky.preprocess(xw.data.shapes.make_shapes(2, seed=5).images)
    _rule_invariants(leaky.model, x, 0.01)


def test_functional_activations_get_the_rule():
    torch.manual_seed(0)
    model = Functional().eval()
    x = torch.randn(2, 3, 16, 16)
    logits, grad = input_gradient(model, x)
    with unchanged(model):
        out, g1 = input_gradient(model, x, 1.0)
        out0, g0 = input_gradient(model, x, 0.0)
    assert torch.equal(out, logits) and torch.equal(out0, logits)
    linear = Functional(identity=True)
    linear.load_state_dict(model.state_dict())
    torch.testing.assert_close(g1, input_gradient(linear, x)[1], rtol=1e-4, atol=1e-6)
    # slope 0 changes only the last activation (a Leaky ReLU with forward slope 0.2); the five ReLUs keep
    # their gradient, so the maps differ, but nothing else
    assert not torch.allclose(g0, grad)


def test_rule_is_removed_after_an_exception(resnet):
    adapter = xw.ModelAdapter(resnet)
    with unchanged(resnet), pytest.raises(RuntimeError, match="boom"):
        with adapter.backward_slope(0.5):
            resnet(torch.randn(1, 3, 32, 32))
            raise RuntimeError("boom")
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(resnet(x)[0, 0], x)
    reference = torch.randn(1, 3, 32, 32, requires_grad=True)
    assert grad.shape == reference.shape


@pytest.mark.parametrize("slope", [-0.1, 1.5, float("nan"), "0.3", True])
def test_bad_slopes(slope):
    with pytest.raises(xw.MethodError, match="backward slope"):
        BackwardSlope(slope)


# ----------------------------------------------------------------------------------- maximize
class Linear(nn.Module):
    """f(x) = Σ w·x per class: AM's known answer is the corner of the box that w points to."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2, 3 * 8 * 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_linear_objective_ends_in_the_corner_the_weights_point_to():
    model = Linear().eval()
    adapter = xw.ModelAdapter(model, input_size=(3, 8, 8))
    result = maximize(adapter, target=1, steps=4, lr=1000.0, range=(-1, 1))
    w = model.fc.weight[1].view(3, 8, 8)
    assert torch.equal(result.images[0], (w > 0).float())  # box (−1, 1) rescaled to [0, 1]
    assert result.saturation.eq(1).all()
    assert result.white[0] == pytest.approx(float((w > 0).all(0).float().mean()))
    torch.testing.assert_close(result.final, w.abs().sum().view(1) + model.fc.bias[1].detach())


def test_range_reproduces_ascent_in_the_box_exactly():
    """One step of x ← clip(x + lr·∇f) in [−1, 1], from uniform noise around 0: by hand."""
    model = Linear().eval()
    adapter = xw.ModelAdapter(model, input_size=(3, 8, 8))
    result = maximize(adapter, target=0, steps=1, lr=0.01, range=(-1, 1), noise=0.2, seed=3)
    start = 0.5 + 0.2 * (torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3)) - 0.5)
    start = start * 2 - 1
    expected = (start + 0.01 * model.fc.weight[0].view(1, 3, 8, 8)).clamp(-1, 1)
    torch.testing.assert_close(result.images * 2 - 1, expected.detach(), rtol=0, atol=1e-6)
    # normalised ascent: one step moves each picture by lr in RMS
    result = maximize(adapter, target=0, steps=1, lr=0.01, optimizer="normalized", range=(-1, 1), noise=0)
    step = result.images * 2 - 1
    assert step.pow(2).mean().sqrt().item() == pytest.approx(0.01, rel=1e-4)


def test_saturation_score():
    pictures = torch.zeros(1, 2, 2, 2)
    pictures[0, 0] = torch.tensor([[1.0, 0.5], [0.999, 0.0]])
    pictures[0, 1] = torch.tensor([[1.0, 0.5], [0.5, 0.5]])
    share, white = saturation(pictures)
    assert share.tolist() == [[0.75, 0.25]]
    assert white.tolist() == [0.25]


def test_maximize_a_class_raises_its_logit_and_keeps_the_model(leaky):
    with unchanged(leaky.model):
        result = maximize(leaky, target=[2, 4], steps=12, snapshot_every=4, optimizer="adam")
    assert result.images.shape == (2, 3, 64, 64) and result.activations.shape == (13, 2)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert (result.final > result.activations[0] + 5).all()
    assert result.snapshot_steps == [0, 4, 8, 12] and result.snapshots.dtype == torch.uint8
    logits = leaky.logits(leaky.preprocess(result.images))
    torch.testing.assert_close(result.final, logits[[0, 1], [2, 4]], rtol=1e-4, atol=1e-4)


def test_maximize_a_conv_channel_and_unit(leaky):
    with unchanged(leaky.model):
        channel = maximize(leaky, layer="layer1.0.conv2", unit=3, steps=6, parameterization="fourier")
        unit = maximize(leaky, layer="layer1.0.relu#1", unit=(5, 10, 12), steps=6, parameterization="tanh")
    for result, (name, index) in (
        (channel, ("layer1.0.conv2", (slice(None), 3))),
        (unit, ("layer1.0.relu#1", (slice(None), 5, 10, 12))),
    ):
        capture = leaky.capture(leaky.preprocess(result.images), [name], grads=False)
        act = capture.acts[name][index]
        expected = act.flatten(1).mean(1) if act.ndim > 1 else act
        torch.testing.assert_close(result.final, expected, rtol=1e-4, atol=1e-5)
        assert result.final[0] > result.activations[0, 0]


def test_backward_slope_equal_to_the_forward_slope_is_plain_am(leaky):
    options = {"target": 1, "steps": 5, "n": 2, "optimizer": "ascent", "seed": 4}
    plain = maximize(leaky, **options)
    same = maximize(leaky, backward_slope=0.01, **options)
    other = maximize(leaky, backward_slope=0.3, **options)
    assert torch.equal(plain.images, same.images) and torch.equal(plain.activations, same.activations)
    assert not torch.equal(plain.images, other.images)
    assert torch.equal(plain.activations[0], other.activations[0])  # same start, same forward


def test_cancel_leaves_the_model_unchanged(leaky):
    def progress(done, total):
        if done == 3:
            raise xw.Cancelled("stop")

    with unchanged(leaky.model), pytest.raises(xw.Cancelled):
        maximize(leaky, target=0, steps=10, backward_slope=0.5, progress=progress, jitter=2, rotate=5)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"layer": "layer1.0.conv2", "unit": 16}, xw.TargetError, "channels are 0..15"),
        ({"layer": "layer1.0.conv2", "unit": (2, 40, 1)}, xw.TargetError, "0..31"),
        ({"layer": "fc", "unit": 6}, xw.TargetError, "units are 0..5"),
        ({"layer": "layer9"}, xw.LayerError, "unknown layer"),
        ({"layer": "fc"}, xw.TargetError, "needs a unit"),
        ({"target": 6}, xw.TargetError, "out of range"),
        ({"target": 1, "layer": "fc", "unit": 1}, xw.TargetError, "not both"),
        ({}, xw.TargetError, "give a class"),
        ({"target": 1, "optimizer": "sgd"}, xw.MethodError, "unknown optimizer"),
        ({"target": 1, "parameterization": "cppn"}, xw.MethodError, "parameterization"),
        ({"target": 1, "backward_slope": 2.0}, xw.MethodError, "backward slope"),
        ({"target": 1, "range": (1, -1)}, xw.InputError, "range"),
        ({"target": 1, "blur": 1.0, "parameterization": "fourier"}, xw.MethodError, "blur"),
    ],
)
def test_bad_targets_and_options(leaky, options, error, words):
    with unchanged(leaky.model), pytest.raises(error, match=words):
        maximize(leaky, steps=1, **options)


def test_regularisers_and_transforms_run(leaky, tmp_path):
    result = maximize(leaky, target=3, steps=4, n=2, jitter=3, scale=0.1, rotate=10, tv=0.5, blur=0.5)
    assert torch.isfinite(result.activations).all()
    assert result.save(tmp_path / "am.png").stat().st_size > 0
    gif = result.save(tmp_path / "am.gif", sample=1)
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == len(result.snapshot_steps)


def test_dataset_examples_and_receptive_fields(leaky):
    images = xw.data.shapes.make_shapes(24, seed=2).images
    examples = dataset_examples(leaky, layer="layer1.0.conv1", unit=3, images=images, k=4)
    capture = leaky.capture(leaky.preprocess(images), ["layer1.0.conv1"], grads=False)
    means = capture.acts["layer1.0.conv1"][:, 3].flatten(1).mean(1)
    assert examples.indices.tolist() == means.topk(4).indices.tolist()
    # conv1 3×3, max-pool 2, conv 3×3 (stride 1 at half resolution): an 8×8 field (clipped at the border)
    sizes = examples.boxes[:, 2:] - examples.boxes[:, :2]
    assert (sizes <= 8).all() and (sizes >= 5).all()
    assert [tuple(c.shape[1:]) for c in examples.crops] == [tuple(s) for s in sizes.tolist()]
    classes = dataset_examples(leaky, target=2, images=images, k=3)
    assert classes.boxes is None and leaky.logits(leaky.preprocess(classes.images)).argmax(1).eq(2).all()


def test_race_of_patterns_white_image_and_its_fix():
    """The toy's known answers: Adam with the model's own slope ends at the white image (logit 0.05·D + 1 −
    0.01·D/4 = 10.12 for D = 192); with backward slope 0.3 it reaches the pattern (logit 1 + 3D/4 = 145)."""
    adapter = race_of_patterns(classes=2)
    with unchanged(adapter.model):
        plain = maximize(adapter, target=[0, 1], steps=60, optimizer="adam", range=(-1, 1))
        fixed = maximize(
            adapter, target=[0, 1], steps=60, optimizer="adam", range=(-1, 1), backward_slope=0.3
        )
    assert plain.white.tolist() == [1.0, 1.0]
    torch.testing.assert_close(plain.final, torch.full((2,), 10.12))
    torch.testing.assert_close(fixed.final, torch.full((2,), 145.0))
    signs = adapter.model.detect.weight[1:].view(2, 3, 8, 8)
    assert torch.equal(fixed.images, (signs > 0).float())
