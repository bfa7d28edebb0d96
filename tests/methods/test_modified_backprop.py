"""xai_widgets.methods.modified_backprop: agreement with Captum, RectGrad against a direct implementation, Guided Grad-CAM,
input alignment, functional ReLUs, model left untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop
from modelguard import SmallCNN, explain_leaves_models_unchanged
from torch import nn

import xai_widgets as xw

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")

METHODS = ["guided_backprop", "deconvnet", "rectgrad", "guided_gradcam"]


@pytest.mark.parametrize(
    ("method", "peer"), [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)]
)
def test_equal_captum_with_inplace_relus(method, peer, small_cnn, resnet18, guard):
    # Same graph, same operations: equal up to float32 summation order (rtol 1e-5, atol 1e-7 · max).
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for model in (small_cnn, resnet18):
        with guard(model):
            ours = xw.explain(model, x, [1, 3], method)
        theirs = peer(model).attribute(x, target=[1, 3])
        torch.testing.assert_close(ours.pixel, theirs, rtol=1e-5, atol=1e-7 * theirs.abs().max().item())
        torch.testing.assert_close(ours.attribution, theirs.sum(1))


class FunctionalReLUs(nn.Module):
    """ReLUs written as F.relu, Tensor.relu and an assigned in-place torch.relu_."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Linear(8, 4),
        )

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = self.c2(x).relu()
        x = torch.relu_(x * 2.0)
        return self.fc(x.mean((2, 3)))


class ModuleReLUs(FunctionalReLUs):
    def __init__(self):
        super().__init__()
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.r3(self.r2(self.c2(self.r1(self.c1(x)))) * 2.0)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize(
    ("method", "peer"), [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)]
)
def test_functional_relus_get_the_rule_too(method, peer, guard):
    # Captum hooks nn.ReLU modules only; the same network written with modules is its reference.
    torch.manual_seed(0)
    functional = FunctionalReLUs().eval()
    modules = ModuleReLUs().eval()
    modules.load_state_dict(functional.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with guard(functional):
        ours = xw.explain(functional, x, [0, 3], method).pixel
    torch.testing.assert_close(ours, peer(modules).attribute(x, target=[0, 3]), rtol=1e-5, atol=1e-9)
    assert not torch.allclose(ours, xw.explain(functional, x, [0, 3], "saliency").pixel)


def rectgrad_reference(model, x, target, q):
    """RectGrad written directly: full backward hooks on the ReLU modules, threshold from a full sort (our
    percentile is exact for layers of up to 16384 units per sample, which covers these 32×32 inputs)."""
    model = copy.deepcopy(model)
    outputs: dict[nn.Module, list] = {}

    def forward_hook(module, inputs, output):
        outputs.setdefault(module, []).append(output.detach())

    def backward_hook(module, grad_input, grad_output):
        a, g = outputs[module].pop(), grad_output[0]
        score = (a * g).flatten(1)
        index = int(round(q / 100 * (score.shape[1] - 1)))
        tau = score.sort(dim=1).values[:, index].view(-1, *([1] * (g.ndim - 1)))
        return (g * ((a * g > tau) & (a > 0)),)

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
            module.register_forward_hook(forward_hook)
            module.register_full_backward_hook(backward_hook)
    x = x.clone().requires_grad_(True)
    out = model(x)
    return torch.autograd.grad(out.gather(1, torch.as_tensor(target).view(-1, 1)).sum(), x)[0]


@pytest.mark.parametrize("q", [98.0, 50.0])
def test_rectgrad_equals_a_direct_implementation(q, small_cnn, resnet18):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    for model in (small_cnn, resnet18):
        ours = xw.explain(model, x, [2, 4], "rectgrad", q=q)
        reference = rectgrad_reference(model, x, [2, 4], q)
        torch.testing.assert_close(ours.pixel, reference, rtol=1e-5, atol=1e-7 * reference.abs().max().item())
        assert ours.options == {"q": q}
    sparse = xw.explain(resnet18, x, 2, "rectgrad").pixel
    dense = xw.explain(resnet18, x, 2, "guided_backprop").pixel
    assert (sparse != 0).sum() < (dense != 0).sum()


def test_guided_and_rectified_maps_align_with_the_input():
    # With a bias-free first conv followed by a ReLU, ⟨map, x⟩ = ⟨g, W x⟩ = ⟨g, z⟩ ≥ 0 because the backward
    # signal g at the first ReLU is ≥ 0 and non-zero only where z > 0 (Zheng, Sang and Xu 2025).
    torch.manual_seed(2)
    model = SmallCNN(bias=False).eval()
    x = torch.randn(6, 3, 16, 16)
    target = torch.arange(6) % 5
    for method in ("guided_backprop", "rectgrad"):
        alignment = (xw.explain(model, x, target, method).pixel * x).flatten(1).sum(1)
        assert (alignment >= -1e-7).all(), method
    gradient = (xw.explain(model, x, target, "saliency").pixel * x).flatten(1).sum(1)
    assert (gradient < 0).any()


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(layer, resnet18, guard):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64)
    with guard(resnet18):
        ours = xw.explain(resnet18, x, [1, 6], "guided_gradcam", layer=layer)
    # Grad-CAM from scratch: channel weights = spatial mean of the gradient, ReLU, bilinear upsampling
    acts = []
    handle = resnet18.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        out = resnet18(x)
    finally:
        handle.remove()
    grad = torch.autograd.grad(out[[0, 1], [1, 6]].sum(), acts[0])[0]
    cam = F.relu((grad.mean((2, 3), keepdim=True) * acts[0]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    expected = GuidedBackprop(resnet18).attribute(x, target=[1, 6]) * cam
    torch.testing.assert_close(
        ours.pixel, expected.detach(), rtol=1e-4, atol=1e-6 * expected.abs().max().item()
    )
    assert ours.layer == layer and ours.layer_map.shape[1:] == acts[0].shape[2:]


def test_callable_target(small_cnn):
    x = torch.randn(2, 3, 16, 16)
    for method in ("guided_backprop", "rectgrad"):
        by_index = xw.explain(small_cnn, x, 2, method).pixel
        torch.testing.assert_close(
            xw.explain(small_cnn, x, lambda logits: logits[:, 2], method).pixel, by_index
        )


class Exploding(nn.Module):
    """Raises in the middle of its forward, after in-place ReLUs ran under the rules."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True)

    def forward(self, x):
        self.relu(self.conv(x))
        raise RuntimeError("boom")


@pytest.mark.parametrize("method", METHODS)
def test_model_left_unchanged_also_after_errors(method, resnet18, small_cnn, guard):
    explain_leaves_models_unchanged(method, resnet18, small_cnn)
    exploding = Exploding().eval()
    adapter = xw.ModelAdapter(exploding, labels=["a", "b"], input_size=(3, 8, 8))
    with guard(exploding), pytest.raises(RuntimeError, match="boom"):
        xw.get_method(method).fn(
            adapter,
            torch.randn(1, 3, 8, 8),
            torch.tensor([0]),
            **({"layer": "conv"} if method == "guided_gradcam" else {}),
        )
