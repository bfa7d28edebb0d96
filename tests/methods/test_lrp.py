"""LRP family: agreement with zennit, conservation through ResNets, sign sanity, errors, model left
untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from modelguard import SmallCNN, explain_leaves_models_unchanged
from torch import nn
from zennit.composites import EpsilonGammaBox, LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.core import Stabilizer
from zennit.layer import Sum
from zennit.rules import AlphaBeta, Epsilon, Gamma, Norm, Pass, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, AvgPool, Convolution

import xai_widgets as xw

LRP_METHODS = [
    "lrp_epsilon",
    "lrp_gamma",
    "lrp_zplus",
    "lrp_alpha1beta0",
    "lrp_alpha2beta1",
    "lrp_composite",
    "dtd",
]
# Our zero-division guard is zennit's clipping stabiliser scaled per sample (rules.divide); ε stays zennit's
# absolute ε. zennit's default stabiliser adds an absolute 1e-6, which swallows small denominators.
GUARD = Stabilizer(1e-6, clip=True, norm_scale=True)
ZENNIT_RULES = {
    "lrp_epsilon": Epsilon,
    "lrp_zplus": lambda: ZPlus(stabilizer=GUARD),
    "lrp_alpha1beta0": lambda: AlphaBeta(1.0, 0.0, stabilizer=GUARD),
    "lrp_alpha2beta1": lambda: AlphaBeta(2.0, 1.0, stabilizer=GUARD),
    "lrp_gamma": lambda: Gamma(stabilizer=GUARD),
}


def zennit_relevance(model, x, target, composite):
    """zennit's attribution with the seed one-hot × logit (in-place ReLUs off on a copy, as zennit needs)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    x = x.clone().requires_grad_(True)
    index = torch.as_tensor(target).view(-1, 1)
    with composite.context(model):
        out = model(x)
        seed = torch.zeros_like(out).scatter(1, index, out.gather(1, index))
        return torch.autograd.grad(out, x, seed)[0]


def layer_map(rule, sums=False):
    """zennit's defaults: Pass on activations, Norm on average pooling (and on the ResNet Sum), ``rule`` on
    convolutions and linear layers."""
    mapping = [(Activation, Pass()), (AvgPool, Norm(GUARD)), (Convolution, rule()), (nn.Linear, rule())]
    return mapping + ([(Sum, Norm(GUARD))] if sums else [])


def bias_free(model):
    """Zero every bias and BatchNorm shift (running_mean = 0, bias = 0): LRP-ε then conserves the logit."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.bias.zero_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
            elif getattr(module, "bias", None) is not None:
                module.bias.zero_()
    return model


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("method", list(ZENNIT_RULES))
def test_rules_equal_zennit_on_a_network_without_batchnorm(small_cnn, guard, method, signed):
    # Tolerance: 1e-5 of the map's largest value (float32; both compute the same terms in a different order).
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    x = x if signed else x.abs()
    with guard(small_cnn):
        ours = xw.explain(small_cnn, x, [1, 3], method)
    theirs = zennit_relevance(small_cnn, x, [1, 3], LayerMapComposite(layer_map(ZENNIT_RULES[method])))
    torch.testing.assert_close(ours.pixel, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())


def test_composite_with_gamma_middle_equals_zennit_epsilon_gamma_box(small_cnn):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16).clamp(-2.5, 2.5)
    ours = xw.explain(small_cnn, x, [0, 4], "lrp_composite", middle="gamma", low=-3.0, high=3.0)
    composite = EpsilonGammaBox(
        low=torch.full_like(x, -3.0),
        high=torch.full_like(x, 3.0),
        stabilizer=GUARD,
    )
    theirs = zennit_relevance(small_cnn, x, [0, 4], composite)
    torch.testing.assert_close(ours.pixel, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())


def test_default_composite_equals_zennit_with_alpha1beta0_in_the_middle(small_cnn):
    """Default lrp_composite: zᴮ on the first conv, α1β0 on the other convs, ε on the dense layers."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16).clamp(-2.5, 2.5)
    ours = xw.explain(small_cnn, x, [0, 4], "lrp_composite", low=-3.0, high=3.0)
    assert ours.options["middle"] == "alpha1beta0"
    composite = SpecialFirstLayerMapComposite(
        layer_map=[
            (Activation, Pass()),
            (AvgPool, Norm(GUARD)),
            (Convolution, AlphaBeta(1.0, 0.0, stabilizer=GUARD)),
            (nn.Linear, Epsilon()),
        ],
        first_map=[(Convolution, ZBox(torch.full_like(x, -3.0), torch.full_like(x, 3.0), stabilizer=GUARD))],
    )
    theirs = zennit_relevance(small_cnn, x, [0, 4], composite)
    torch.testing.assert_close(ours.pixel, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())
    gamma = xw.explain(small_cnn, x, [0, 4], "lrp_composite", middle="gamma", low=-3.0, high=3.0)
    assert not torch.allclose(gamma.pixel, ours.pixel)


def fold_batchnorm(model):
    """A copy of a torchvision ResNet with every BatchNorm merged into the conv before it (exactly)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                with torch.no_grad():
                    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
                    conv.weight.mul_(scale.view(-1, 1, 1, 1))
                    conv.bias = nn.Parameter(norm.bias - norm.running_mean * scale)
                parent._modules[second] = nn.Identity()
    return model


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_zplus", "lrp_gamma"])
def test_resnet_with_batchnorm_equals_zennit_on_the_folded_network(resnet18, guard, method):
    # zennit's own BatchNorm merge leaves each BN computing x/√(1+eps), a 1e-5 change per layer that tiny-ε
    # LRP amplifies; on an exactly folded copy (and its ResNetCanonizer for the residual Sum) the results
    # agree to float64 round-off, which shows our folding and residual split are zennit's.
    model = copy.deepcopy(resnet18).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.normal_(0, 0.1)
    torch.manual_seed(3)
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    with guard(model):
        ours = xw.explain(model, x, [1, 7], method)
    composite = LayerMapComposite(layer_map(ZENNIT_RULES[method], sums=True), canonizers=[ResNetCanonizer()])
    theirs = zennit_relevance(fold_batchnorm(model), x, [1, 7], composite)
    torch.testing.assert_close(ours.pixel, theirs, rtol=1e-7, atol=1e-10 * theirs.abs().max().item())


def assert_conserves(explanation, cuts):
    """Σ R at the input and at every layer that cuts the graph equals the explained logit within 1e-3."""
    logit = explanation.score
    tolerance = 1e-3 * logit.abs()
    assert torch.all((explanation.pixel.flatten(1).sum(1) - logit).abs() <= tolerance)
    torch.testing.assert_close(explanation.extras["output_relevance"], logit)
    layers = explanation.extras["layer_relevance"]
    for name in cuts:
        assert torch.all((layers[name] - logit).abs() <= tolerance), name


def test_epsilon_conserves_the_logit_on_a_bias_free_small_cnn(guard):
    torch.manual_seed(0)
    model = SmallCNN(bias=False).eval()
    x = torch.randn(3, 3, 32, 32)
    with guard(model):
        e = xw.explain(model, x, [0, 1, 2], "lrp_epsilon", epsilon=1e-9)
    assert list(e.extras["layer_relevance"]) == ["features.0", "features.2", "features.5", "pool", "fc"]
    assert_conserves(e, e.extras["layer_relevance"])


def test_epsilon_conserves_the_logit_through_resnet18(resnet18, guard):
    model = bias_free(copy.deepcopy(resnet18))
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with guard(model):
        e = xw.explain(model, x, [2, 5], "lrp_epsilon", epsilon=1e-9)
    adds = [name for name in e.extras["layer_relevance"] if name.endswith("(+)")]
    assert len(adds) == 8
    assert_conserves(e, ["conv1", "avgpool", "fc", *adds])


def test_epsilon_conserves_the_logit_through_resnet50(guard):
    torch.manual_seed(0)
    model = bias_free(torchvision.models.resnet50(num_classes=10).eval())
    x = torch.randn(1, 3, 64, 64)
    with guard(model):
        e = xw.explain(model, x, 3, "lrp_epsilon", epsilon=1e-9)
    adds = [name for name in e.extras["layer_relevance"] if name.endswith("(+)")]
    assert len(adds) == 16
    assert_conserves(e, ["conv1", "fc", *adds])


def test_positive_rules_give_non_negative_relevance(small_cnn):
    torch.manual_seed(4)
    x = torch.rand(4, 3, 16, 16)
    logits = small_cnn(x)
    target = logits.argmax(1)
    assert (logits.gather(1, target[:, None]) > 0).all()
    for method in ("lrp_zplus", "lrp_alpha1beta0"):
        assert (xw.explain(small_cnn, x, target, method).pixel >= 0).all(), method
    signed = torch.randn(4, 3, 16, 16)
    target = small_cnn(signed).argmax(1)
    for first in ("zbox", "wsquare"):  # zᴮ and w² keep every term ≥ 0 for any input within the bounds
        assert (xw.explain(small_cnn, signed, target, "dtd", first=first).pixel >= 0).all(), first
    assert (xw.explain(small_cnn, x, target, "lrp_alpha2beta1").pixel < 0).any()


def test_known_equalities_between_variants(small_cnn):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 16, 16)
    eps = xw.explain(small_cnn, x, [1, 2], "lrp_epsilon")
    gamma0 = xw.explain(small_cnn, x, [1, 2], "lrp_gamma", gamma=0.0)
    torch.testing.assert_close(gamma0.pixel, eps.pixel)
    zplus = xw.explain(small_cnn, x, [1, 2], "lrp_zplus")
    torch.testing.assert_close(xw.explain(small_cnn, x, [1, 2], "lrp_alpha1beta0").pixel, zplus.pixel)
    middle = xw.explain(small_cnn, x, [1, 2], "lrp_composite", middle="alpha1beta0")
    assert middle.options["middle"] == "alpha1beta0"
    callable_target = xw.explain(small_cnn, x, lambda logits: logits[:, 2], "lrp_epsilon")
    torch.testing.assert_close(callable_target.pixel, xw.explain(small_cnn, x, 2, "lrp_epsilon").pixel)


def test_box_bounds_come_from_the_adapter_normalisation(small_cnn):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    adapter = xw.ModelAdapter(small_cnn, mean=mean, std=std)
    x = adapter.preprocess(torch.rand(2, 3, 16, 16))
    ours = xw.explain(adapter, x, 1, "lrp_composite")
    low = torch.tensor([(0 - m) / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    explicit = xw.explain(small_cnn, x, 1, "lrp_composite", low=low, high=high)
    torch.testing.assert_close(ours.pixel, explicit.pixel)


@pytest.mark.parametrize("method", LRP_METHODS)
def test_model_left_unchanged_also_after_errors(method, resnet18, small_cnn):
    explain_leaves_models_unchanged(method, resnet18, small_cnn)


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.relu = nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.relu(self.norm(self.conv(x))).mean((2, 3)))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate, self.fc = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc((x / (torch.sigmoid(self.gate(x)) + 1)).mean((2, 3)))


class InPlaceScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

    def forward(self, x):
        y = self.conv(x)
        y.mul_(2.0)
        return self.fc(y.mean((2, 3)))


class InPlaceMerge(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

    def forward(self, x):
        y = self.conv(x)
        y.add_(x)
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (GroupNormNet(), r"GroupNorm \('norm'\).*statistics of its own input"),
        (Gated(), r"Gated \(the model itself\).*divides two activations"),
        (InPlaceMerge(), r"InPlaceMerge.*in-place add_"),
        (InPlaceScale(), r"modifies a layer output in place"),
        (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.LocalResponseNorm(2), nn.Flatten(), nn.Linear(144, 2)),
            r"LocalResponseNorm \('1'\)",
        ),
    ],
)
def test_unsupported_models_raise_naming_the_module(model, pattern, guard):
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    with guard(model), pytest.raises(xw.UnsupportedModelError, match=pattern):
        xw.explain(model, x, 0, "lrp_epsilon")


class Functional(nn.Module):
    """Residual adds written as new tensors, functional (also in-place) ReLUs, mean pooling and upsampling."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b = nn.Conv2d(4, 4, 1, bias=False)
        self.c = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = h + self.b(h)
        h = torch.add(h, torch.relu(self.c(h)), alpha=0.5)
        h = F.relu(self.norm(self.c(self.up(h))), inplace=True)  # as in DenseNet
        return self.fc(h.mean((2, 3)))


def test_functional_adds_and_averages_conserve_relevance(guard):
    torch.manual_seed(6)
    model = Functional().eval()
    with guard(model):
        e = xw.explain(model, torch.randn(2, 3, 8, 8), 1, "lrp_epsilon", epsilon=1e-9)
    assert list(e.extras["layer_relevance"]) == ["a", "b", "model (+)", "c", "up", "model (mean)", "fc"]
    assert_conserves(e, ["a", "up", "model (mean)", "fc"])


def test_substituted_parameters_are_used(resnet18):
    # sanity checks run methods inside adapter.using_params (functional_call): rules must read those tensors
    torch.manual_seed(7)
    params = {name: torch.randn_like(p) * 0.05 for name, p in resnet18.named_parameters() if "layer4" in name}
    adapter = xw.ModelAdapter(resnet18)
    x = torch.randn(1, 3, 32, 32)
    with adapter.using_params(params):
        substituted = xw.explain(adapter, x, 3, "lrp_composite")
    changed = copy.deepcopy(resnet18)
    changed.load_state_dict(params, strict=False)
    torch.testing.assert_close(substituted.pixel, xw.explain(changed, x, 3, "lrp_composite").pixel)
    assert not torch.allclose(substituted.pixel, xw.explain(adapter, x, 3, "lrp_composite").pixel)


def test_torchvision_densenet_with_functional_inplace_relu_conserves(guard):
    # DenseNet ends its features with F.relu(features, inplace=True) on a BatchNorm output that carries a rule
    torch.manual_seed(9)
    model = torchvision.models.DenseNet(
        growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=3
    ).eval()
    bias_free(model)
    with guard(model):
        e = xw.explain(model, torch.randn(2, 3, 32, 32), 1, "lrp_epsilon", epsilon=1e-9)
    assert_conserves(e, ["features.conv0", "classifier"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=True),
        lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10),
    ],
    ids=["googlenet", "shufflenet"],
)
def test_lrp0_is_gradient_times_input_and_conserves_on_models_with_small_activations(make, guard):
    """LRP-0 equals gradient × input on ReLU networks (also with biases), so it is the known answer. Random
    GoogLeNet's pre-activations are about 1e-13: an absolute 1e-6 stabiliser left 1e-17 of relevance (z⁺ on
    the bias-free copy kept 3e-24 of the logit), and on ShuffleNet ε = 0 gave NaN."""
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(1, 3, 64, 64)
    with guard(model):
        lrp0 = xw.explain(model, x, 1, "lrp_epsilon", epsilon=0.0)
    ixg = xw.explain(model, x, 1, "input_x_gradient").pixel
    assert torch.isfinite(lrp0.pixel).all()
    torch.testing.assert_close(lrp0.pixel, ixg, rtol=0.0, atol=1e-4 * ixg.abs().max().item())
    free = bias_free(copy.deepcopy(model))
    e = xw.explain(free, x, 1, "lrp_epsilon", epsilon=0.0)
    assert torch.all((e.pixel.flatten(1).sum(1) - e.score).abs() <= 1e-3 * e.score.abs())
    if isinstance(model, torchvision.models.GoogLeNet):
        # z⁺ conserves where every unit with relevance has a positive contribution (ReLU inputs everywhere)
        e = xw.explain(free, x.abs(), 1, "lrp_zplus")
        assert torch.all((e.pixel.flatten(1).sum(1) - e.score).abs() <= 1e-3 * e.score.abs())
