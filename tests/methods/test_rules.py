"""Backward rules on single layers against their textbook equations, and the canonizers that place them."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_widgets as xw
from xai_widgets.methods.canonizers import FunctionalRules
from xai_widgets.methods.composites import LRPComposite
from xai_widgets.methods.lrp import lrp_composite, lrp_epsilon
from xai_widgets.methods.rules import (
    Affine,
    AlphaBeta,
    DeconvReLU,
    Epsilon,
    Gamma,
    GuidedReLU,
    Ledger,
    Norm,
    RectifiedReLU,
    Sum,
    WSquare,
    ZBox,
    ZPlus,
    _subpixel,
    clear_weight_cache,
    percentile,
    stabilize,
    subpixel_transpose,
)

EPS = 1e-6


def through(module, rule, x, r):
    """R_in of ``rule`` installed on ``module`` for input ``x`` and output relevance ``r``."""
    x = x.clone().requires_grad_(True)
    out = rule.forward_hook(module, (x,), module(x))
    return torch.autograd.grad(out, x, r)[0]


def linear_case(signed: bool, bias: bool = True):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4, bias=bias).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    x = x if signed else x.abs()
    r = torch.randn(3, 4, dtype=torch.float64)
    contributions = x[:, :, None] * layer.weight.T[None]  # C[n, i, o] = x_i w_oi
    b = layer.bias if bias else torch.zeros(4, dtype=torch.float64)
    return layer, x, r, contributions, b.detach()


def share(numerator, denominator, r, epsilon=0.0):
    """Σ_o numerator[n,i,o] / (denominator[n,o] + ε sign) · r[n,o]: the textbook rules divide exactly (the
    rules' zero-division guard acts only on denominators below 1e-6 of their sample's RMS)."""
    return (numerator / stabilize(denominator, epsilon)[:, None, :] * r[:, None, :]).sum(2)


@pytest.mark.parametrize("signed", [False, True])
def test_epsilon_is_contribution_over_output(signed):
    layer, x, r, c, b = linear_case(signed)
    expected = share(c, c.sum(1) + b, r, EPS)
    torch.testing.assert_close(through(layer, Epsilon(EPS), x, r), expected)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (2.0, 1.0)])
def test_alpha_beta_splits_positive_and_negative_contributions(signed, alpha, beta):
    layer, x, r, c, b = linear_case(signed)
    pos, neg = c.clamp(min=0), c.clamp(max=0)
    expected = alpha * share(pos, pos.sum(1) + b.clamp(min=0), r) - beta * share(
        neg, neg.sum(1) + b.clamp(max=0), r
    )
    torch.testing.assert_close(through(layer, AlphaBeta(alpha, beta, EPS), x, r), expected)
    if beta == 0:
        torch.testing.assert_close(through(layer, ZPlus(EPS), x, r), expected)


@pytest.mark.parametrize("signed", [False, True])
def test_gamma_boosts_contributions_of_the_output_sign(signed):
    layer, x, r, c, b = linear_case(signed)
    g = 0.3
    z = c.sum(1) + b
    up, down = c + g * c.clamp(min=0), c + g * c.clamp(max=0)
    expected = share(up, up.sum(1) + b + g * b.clamp(min=0), r * (z > 0)) + share(
        down, down.sum(1) + b + g * b.clamp(max=0), r * (z < 0)
    )
    torch.testing.assert_close(through(layer, Gamma(g, EPS), x, r), expected)


def test_gamma_zero_is_epsilon_and_alpha_beta_rejects_bad_parameters():
    layer, x, r, _, _ = linear_case(True)
    torch.testing.assert_close(through(layer, Gamma(0.0, EPS), x, r), through(layer, Epsilon(0.0), x, r))
    with pytest.raises(xw.MethodError, match="α − β = 1"):
        AlphaBeta(2.0, 0.5)
    with pytest.raises(xw.MethodError, match="γ ≥ 0"):
        Gamma(-1.0)


def test_zbox_and_wsquare_follow_their_definitions():
    layer, x, r, c, _ = linear_case(True)
    low, high = -3.0, 2.5
    wp, wn = layer.weight.clamp(min=0).T[None], layer.weight.clamp(max=0).T[None]
    numerator = c - low * wp - high * wn
    torch.testing.assert_close(
        through(layer, ZBox(low, high, EPS), x, r), share(numerator, numerator.sum(1), r)
    )
    square = (layer.weight**2).T[None].expand_as(c)
    torch.testing.assert_close(through(layer, WSquare(EPS), x, r), share(square, square.sum(1), r))


def test_zbox_without_bounds_uses_each_samples_range_and_is_non_negative():
    layer, x, r, _, _ = linear_case(True)
    relevance = through(layer, ZBox(stabilizer=1e-12), x, r.abs())
    assert (relevance >= -1e-12).all()
    torch.testing.assert_close(relevance.sum(1), r.abs().sum(1))
    # the bounds of a sample do not depend on the other samples of its batch (they were the batch's range)
    alone = through(layer, ZBox(), x[:1], r[:1].abs())
    wide = through(layer, ZBox(), torch.cat([x[:1], 10 * x[1:]]), r.abs())
    torch.testing.assert_close(wide[:1], alone)
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3).double()
    image, scores = torch.randn(2, 2, 5, 5, dtype=torch.float64), torch.rand(2, 3, 3, 3, dtype=torch.float64)
    both = through(conv, ZBox(), torch.cat([image[:1], 5 * image[1:]]), scores)
    torch.testing.assert_close(both[:1], through(conv, ZBox(), image[:1], scores[:1]))


def test_the_division_guard_is_relative_per_sample_and_defines_zero_over_zero():
    """LRP-0 (ε = 0) on a layer with tiny pre-activations conserves relevance (an absolute 1e-6 floor
    swallowed it), zero denominators give 0 instead of NaN, and one sample's scale does not change another's."""
    layer, x, r, _, _ = linear_case(False, bias=False)
    with torch.no_grad():
        layer.weight.mul_(1e-20)
    relevance = through(layer, Epsilon(0.0), x, r)
    torch.testing.assert_close(relevance.sum(1), r.sum(1), rtol=1e-9, atol=0.0)
    for rule in (ZPlus(), Gamma(0.25), AlphaBeta(2.0, 1.0)):
        out = through(layer, rule, x.abs(), r.abs())
        torch.testing.assert_close(out.sum(1), r.abs().sum(1), rtol=1e-9, atol=0.0)
    zero = through(layer, Epsilon(0.0), torch.zeros_like(x), r)
    assert torch.equal(zero, torch.zeros_like(x))
    mixed = through(layer, Epsilon(0.0), torch.cat([x[:1], 1e30 * x[1:]]), r)
    torch.testing.assert_close(mixed[:1], through(layer, Epsilon(0.0), x[:1], r[:1]), rtol=1e-12, atol=0.0)


def test_rules_conserve_relevance_without_bias():
    layer, x, r, _, _ = linear_case(False, bias=False)
    for rule in (Epsilon(1e-12), ZPlus(1e-12), AlphaBeta(2.0, 1.0, 1e-12), Gamma(0.25, 1e-12)):
        torch.testing.assert_close(through(layer, rule, x, r).sum(1), r.sum(1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Conv2d(4, 6, 3, stride=2, padding="valid"),
        nn.Conv2d(4, 6, 3, padding="same", padding_mode="reflect"),
        nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2),
        nn.Conv1d(4, 6, 5, padding=2),
        nn.Conv2d(4, 8, 7, stride=2, padding=3),  # an image layer: the sub-pixel path
    ],
)
def test_affine_transpose_is_the_input_gradient(conv):
    torch.manual_seed(0)
    x = torch.randn(2, 4, *([9, 9] if isinstance(conv, nn.Conv2d) else [11]), requires_grad=True)
    out = conv(x)
    s = torch.randn_like(out)
    layer = Affine.of(conv)
    torch.testing.assert_close(layer.transpose(s, conv.weight, x), torch.autograd.grad(out, x, s)[0])
    torch.testing.assert_close(layer.linear(x, conv.weight) + layer.bias_as(out), out)
    first, second = layer.transpose_pair(s, conv.weight, conv.weight.clamp(min=0), x)
    torch.testing.assert_close(second, layer.transpose(s, conv.weight.clamp(min=0), x))
    positive, minus = layer.transpose_sides(s, x)
    torch.testing.assert_close(positive, layer.transpose(s, conv.weight.clamp(min=0), x))
    torch.testing.assert_close(minus, layer.transpose(s, conv.weight.clamp(min=0) - conv.weight, x))
    v = torch.randn_like(out)
    expected = layer.transpose(s, conv.weight, x) + 0.25 * layer.transpose(v, conv.weight.clamp(min=0), x)
    torch.testing.assert_close(layer.transpose_sum(s, v, 0.25, x), expected)


@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "padding"),
    [(3, 7, 2, 3), (1, 4, 3, 1), (2, 1, 2, 0), (3, (3, 5), 2, (1, 2)), (4, 3, 2, 2), (3, 2, 4, 0)],
)
@pytest.mark.parametrize("size", [(9, 9), (8, 13), (5, 6)])
def test_subpixel_transpose_is_the_input_gradient(channels, kernel, stride, padding, size):
    """The strided image-layer transpose as one stride-1 convolution and a pixel shuffle, at odd and even sides,
    kernels longer or shorter than the stride, and positions no output reads (they get 0)."""
    conv = nn.Conv2d(channels, 5, kernel, stride=stride, padding=padding)
    assert _subpixel(conv, conv.weight)
    x = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = conv(x)
    s = torch.randn_like(out)
    got = subpixel_transpose(s, conv.weight, stride, conv.padding, size)
    torch.testing.assert_close(got, torch.autograd.grad(out, x, s)[0])
    assert got.is_contiguous()


class ConvNorm(nn.Module):
    """conv → BN → ReLU → conv → BN → GAP → linear, with some negative BN scales."""

    def __init__(self):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.n2 = nn.Conv2d(6, 5, 3, bias=False), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = self.n2(self.c2(F.relu(self.n1(self.c1(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def folded_copy(model):
    """The same function with each BatchNorm merged into the conv before it (explicitly)."""
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for conv, norm in ((folded.c1, folded.n1), (folded.c2, folded.n2)):
            scale = norm.weight / (norm.running_var + norm.eps).sqrt()
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.bias)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)
    folded.n1, folded.n2 = nn.Identity(), nn.Identity()
    return folded


@pytest.mark.parametrize(
    "method", ["lrp_epsilon", "lrp_zplus", "lrp_alpha2beta1", "lrp_gamma", "lrp_composite"]
)
def test_batchnorm_is_folded_into_the_preceding_conv(method, guard):
    torch.manual_seed(0)
    model = ConvNorm().double().eval()
    with torch.no_grad():
        for norm in (model.n1, model.n2):
            norm.running_mean.normal_(0, 0.3)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(-1, 1.5)
            norm.bias.normal_(0, 0.2)
    folded = folded_copy(model)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with guard(model):
        ours = xw.explain(model, x, [0, 2], method)
    reference = xw.explain(folded, x, [0, 2], method)
    torch.testing.assert_close(ours.pixel, reference.pixel, rtol=1e-9, atol=1e-12)
    assert list(ours.extras["layer_relevance"]) == ["c1", "c2", "model (adaptive_avg_pool2d)", "fc"]


def test_batchnorm_without_a_preceding_layer_gets_epsilon_on_its_affine_map():
    norm = nn.BatchNorm1d(4).double().eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2)
        norm.weight.normal_()
        norm.bias.normal_()
    model = nn.Sequential(norm, nn.Linear(4, 2).double())
    x = torch.randn(3, 4, dtype=torch.float64)
    r = lrp_epsilon(xw.as_adapter(model), x, torch.ones(3, dtype=torch.long), epsilon=0.0).pixel
    a = norm.weight / (norm.running_var + norm.eps).sqrt()
    y = norm(x)
    expected = (
        x
        * a
        * through(model[1], Epsilon(0.0), y, F.one_hot(torch.ones(3, dtype=torch.long), 2) * model(x))
        / y
    )
    torch.testing.assert_close(r, expected.detach())


def test_sum_splits_in_proportion_to_each_branch():
    a = torch.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
    b = torch.tensor([[3.0, 1.0, -1.0]], requires_grad=True)
    ledger = Ledger()
    rule = Sum(0.0).bind("add", ledger)
    r = torch.tensor([[4.0, 2.0, 1.0]])
    ra, rb = torch.autograd.grad(rule.apply(a, b), (a, b), r)
    torch.testing.assert_close(ra, a.detach() * r / (a + b).detach())
    torch.testing.assert_close(rb, b.detach() * r / (a + b).detach())
    torch.testing.assert_close(ledger.totals["add"], r.sum(1))


def test_norm_on_average_pooling_is_proportional():
    x = torch.rand(1, 1, 2, 2, requires_grad=True)
    out = Norm(0.0).apply(F.avg_pool2d, x, 2)
    r = torch.tensor([[[[3.0]]]])
    torch.testing.assert_close(torch.autograd.grad(out, x, r)[0], 3.0 * x.detach() / x.detach().sum())


def test_relu_rules_map_the_gradient():
    a = torch.tensor([[0.0, 1.0, 2.0, 0.0, 3.0]])
    g = torch.tensor([[1.0, -1.0, 2.0, -3.0, 0.5]])
    torch.testing.assert_close(GuidedReLU().backward(a, g), torch.tensor([[0.0, 0.0, 2.0, 0.0, 0.5]]))
    torch.testing.assert_close(DeconvReLU().backward(a, g), torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.5]]))
    # a ⊙ g = [0, -1, 4, 0, 1.5]; the 75th percentile (nearest rank) is 1.5, so only the unit above passes
    torch.testing.assert_close(RectifiedReLU(75.0).backward(a, g), torch.tensor([[0.0, 0.0, 2.0, 0.0, 0.0]]))
    with pytest.raises(xw.MethodError, match="percentile"):
        RectifiedReLU(100.0)


@pytest.mark.parametrize("kind", ["normal", "sparse", "ties"])
def test_percentile_is_exact_up_to_16384_values_and_close_beyond(kind):
    torch.manual_seed(0)
    values = torch.randn(3, 200_000)
    if kind == "sparse":  # like a ⊙ g after ReLUs: mostly zeros
        values = values.clamp(min=0) * torch.randn(3, 200_000).clamp(min=0)
    elif kind == "ties":
        values = torch.randint(0, 4, (3, 200_000)).float()
    short = values[:, :16384]
    for q in (0.0, 50.0, 98.0, 99.99):
        index = int(round(q / 100 * (short.shape[1] - 1)))
        assert torch.equal(percentile(short, q), short.sort(dim=1).values[:, index])
        # beyond: the returned value's rank range in the row contains the wanted rank ± 5σ of the sampling
        # (plus a few gaps between sampled order statistics, which matter at the extremes)
        tau = percentile(values, q).view(-1, 1)
        low, high = (values < tau).sum(1), (values <= tau).sum(1)
        p, m = q / 100, values.shape[1]
        slack = 5 * (p * (1 - p) / 16384) ** 0.5 * m + 4 * m / 16384
        wanted = p * (m - 1)
        assert torch.all(low <= wanted + slack) and torch.all(high >= wanted - slack)


def test_unknown_leaf_module_raises_naming_its_type(small_cnn, guard):
    class Wobble(nn.Module):
        def forward(self, x):
            return x * 1.5

    model = nn.Sequential(small_cnn.features, Wobble(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), small_cnn.fc)
    with guard(model), pytest.raises(xw.UnsupportedModelError, match=r"Wobble \('1'\)"):
        xw.explain(model, torch.randn(1, 3, 8, 8), 0, "lrp_epsilon")


class TwoConvs(nn.Module):
    """Two convolutions registered in one order or the other; the forward always runs ``early`` first."""

    def __init__(self, early_first: bool):
        super().__init__()
        if early_first:
            self.early, self.late = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        else:
            self.late, self.early = nn.Conv2d(4, 4, 3), nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.late(torch.relu(self.early(x))).mean((2, 3)))


def test_the_first_layer_is_the_first_to_run_not_the_first_registered():
    torch.manual_seed(10)
    registered_first = TwoConvs(True).eval()
    registered_last = TwoConvs(False).eval()
    registered_last.load_state_dict(registered_first.state_dict())
    x, target = torch.randn(2, 3, 8, 8), torch.tensor([1, 1])
    # the driver directly: ModelAdapter.in_channels reads the first *registered* conv
    ours = lrp_composite(xw.as_adapter(registered_last), x, target, low=-4.0, high=4.0).pixel
    reference = lrp_composite(xw.as_adapter(registered_first), x, target, low=-4.0, high=4.0).pixel
    torch.testing.assert_close(ours, reference)
    assignment = LRPComposite(conv=Gamma(), dense=Epsilon(), first=ZBox()).assign(registered_last, Ledger())
    assert set(assignment) == {registered_last.early, registered_last.late, registered_last.fc}


def test_derived_weights_follow_parameter_changes():
    # W'⁺ and W' + γW'⁺ are kept between calls; any change of the weight or the BatchNorm must be seen
    torch.manual_seed(8)
    model = ConvNorm().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    xw.explain(model, x, 1, "lrp_composite")
    with torch.no_grad():
        model.c2.weight.mul_(-1.5)  # in place: a new version
        model.n1.weight.mul_(0.5)  # changes the folded scale
    model.c1.weight.data = model.c1.weight.data * 2  # new storage
    reference = xw.explain(copy.deepcopy(model), x, 1, "lrp_composite").pixel
    torch.testing.assert_close(xw.explain(model, x, 1, "lrp_composite").pixel, reference)
    clear_weight_cache()
    torch.testing.assert_close(xw.explain(model, x, 1, "lrp_composite").pixel, reference)


def test_functional_rules_route_adds_of_two_activations_and_averages():
    x = torch.randn(2, 3, requires_grad=True)
    ledger = Ledger()
    with FunctionalRules(nn.Identity(), x, "lrp_epsilon", add=Sum(0.0), average=Norm(0.0), ledger=ledger):
        y = x * 2.0
        z = (y + 1.0) + x  # the first add has a constant (a bias, keeps its share); the second joins branches
        m = z.mean(1)
    assert z.grad_fn.name() == "_SumBackward"
    assert m.grad_fn.name() == "_OverOutputBackward"
    assert list(ledger.totals) == ["model (+ constant)", "model (+)", "model (mean)"]
