"""DLBacktrace: the known answer, conservation, the routing rules, the saturation table, the contrastive streams,
and torchvision models left unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from modelguard import unchanged
from torch import nn

import xai_widgets as xw
from xai_widgets.errors import MethodError, UnsupportedModelError
from xai_widgets.methods import backtrace as backtrace_module
from xai_widgets.methods.backtrace import (
    GELU,
    HARDSWISH,
    LEAKY_RELU,
    RELU,
    SIGMOID,
    SILU,
    TANH,
    coefficients,
)
from xai_widgets.model import ModelAdapter

TOL = 1e-5  # relative: conservation holds to float32 rounding


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def test_known_answer_and_bias_share():
    layer = _linear([[0.5, 0.3, 0.2], [0.1, 0.4, 0.5]], [0.1, 0.2])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    with unchanged(layer):
        e = xw.explain(layer, x, 1, "backtrace", multiplier=100)
    assert e.attribution.shape == (1, 3)
    torch.testing.assert_close(e.attribution, torch.tensor([[3.8462, 30.7692, 57.6923]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(e.extras["bias_absorbed"], torch.tensor([100 * 0.2 / 2.6]))
    row = next(iter(e.extras["ledger"].values()))
    torch.testing.assert_close(row["reached"], torch.tensor([100.0]))
    torch.testing.assert_close(row["passed"] + row["absorbed"], row["reached"])


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 16, bias=False),
        nn.ReLU(),
        nn.Linear(16, 3, bias=False),
    ).eval()


class _CNN(nn.Module):
    """Bias-free: conv, BatchNorm (folded), in-place ReLU, max-pool, depthwise conv, residual add, average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        out = self.pool(self.relu(self.bn(self.conv(x))))
        out = out + torch.relu(self.depthwise(out))
        return self.fc(torch.flatten(self.gap(out), 1))


def _bias_free_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = _CNN().eval()
    with torch.no_grad():  # BatchNorm in eval is affine: keep it bias-free (β = μ·γ/σ so the shift is 0)
        model.bn.running_mean.zero_()
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("make, shape", [(_mlp, (4, 6)), (_bias_free_cnn, (2, 3, 16, 16))])
def test_bias_free_relu_networks_conserve(make, shape):
    model = make()
    torch.manual_seed(1)
    x = torch.randn(shape)
    with unchanged(model):
        e = xw.explain(model, x, 0, "backtrace", multiplier=100)
    total = e.attribution.flatten(1).sum(1)
    torch.testing.assert_close(total, torch.full_like(total, 100.0), rtol=TOL, atol=0)
    assert float(e.extras["bias_absorbed"].abs().max()) < 100 * TOL
    for row in e.extras["ledger"].values():  # every node passes on what reaches it
        torch.testing.assert_close(row["passed"], row["reached"], rtol=TOL, atol=1e-4)


def test_max_pool_routes_to_the_winner_only():
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
    torch.manual_seed(0)
    x = torch.randn(1, 1, 4, 4)
    e = xw.explain(model, x, 0, "backtrace")
    windows = x.view(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)
    winners = torch.zeros(4, 4, dtype=torch.bool)
    winners[torch.arange(4), windows.argmax(1)] = True
    winners = winners.view(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)
    relevance = e.attribution[0]
    assert bool((relevance[~winners] == 0).all())
    assert bool((relevance[winners] != 0).all())
    torch.testing.assert_close(relevance.sum(), torch.tensor(1.0))


class _TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = _linear([[1.0], [1.0]])

    def forward(self, x):
        return self.head(x[:, 0:1] + x[:, 1:2])


def test_residual_add_splits_by_magnitude():
    e = xw.explain(_TwoBranches(), torch.tensor([[3.0, -1.0]]), 0, "backtrace")
    torch.testing.assert_close(e.attribution, torch.tensor([[0.75, 0.25]]))
    assert any(name.endswith("(+)") for name in e.extras["ledger"])


def test_saturation_table():
    r = torch.ones(1)
    p, n = torch.tensor([5.0]), torch.tensor([1.0])  # t = 4 (no bias)

    def split(t, activation, p=p, n=n):
        alpha, beta = coefficients(r, p, n, torch.tensor([t]), 0.0, activation)
        return float(alpha), float(beta)

    assert split(4.0, None) == pytest.approx((1 / 6, 1 / 6))
    assert split(4.0, TANH) == (
        pytest.approx(1 / 5),
        0.0,
    )  # beyond tanh's upper bound 2: negatives carry nothing
    assert split(4.0, SIGMOID) == pytest.approx((1 / 6, 1 / 6))  # within (−4, 4)
    assert split(4.0, LEAKY_RELU) == pytest.approx((1 / 6, 1 / 6))  # no bounds
    low_p, low_n = torch.tensor([1.0]), torch.tensor([9.0])  # t = −8
    assert split(-8.0, TANH, low_p, low_n) == (0.0, pytest.approx(1 / 9))
    assert split(-8.0, SIGMOID, low_p, low_n) == (0.0, pytest.approx(1 / 9))
    assert split(-8.0, SILU, low_p, low_n) == (0.0, pytest.approx(1 / 9))  # swish's lower bound −6
    assert split(-8.0, RELU, low_p, low_n) == (0.0, pytest.approx(1 / 9))  # the bound 0 is applied
    assert split(-3.2, HARDSWISH, torch.tensor([0.8]), torch.tensor([4.0])) == (0.0, pytest.approx(1 / 4))
    assert GELU.lower == pytest.approx(-6 / 1.702)
    assert split(-3.2, GELU, torch.tensor([0.8]), torch.tensor([4.0])) == pytest.approx((1 / 4.8, 1 / 4.8))
    # non-monotonic: where f(t) equals f(P) (N too small to change the output) the negative side is dropped
    tiny = torch.tensor([1e-9])
    assert split(20.0, SILU, torch.tensor([20.0]), tiny) == (pytest.approx(1 / 20), 0.0)
    # with a bias: the kept side takes the relevance less the bias share
    alpha, beta = coefficients(r, torch.tensor([5.0]), torch.tensor([1.0]), torch.tensor([5.0]), 1.0, TANH)
    assert (float(alpha), float(beta)) == (pytest.approx(1 / 6), 0.0)


def test_activation_after_a_layer_sets_its_saturation():
    def model(activation):
        return nn.Sequential(_linear([[1.0, -1.0]]), activation, _linear([[1.0]])).eval()

    saturated = xw.explain(model(nn.Tanh()), torch.tensor([[5.0, 1.0]]), 0, "backtrace")
    torch.testing.assert_close(saturated.attribution, torch.tensor([[1.0, 0.0]]))
    inside = xw.explain(model(nn.Tanh()), torch.tensor([[1.5, 0.5]]), 0, "backtrace")
    torch.testing.assert_close(inside.attribution, torch.tensor([[0.75, 0.25]]))
    leaky = xw.explain(model(nn.LeakyReLU(0.1)), torch.tensor([[5.0, 1.0]]), 0, "backtrace")
    torch.testing.assert_close(leaky.attribution, torch.tensor([[5 / 6, 1 / 6]]))


def test_contrastive_streams():
    layer = _linear([[0.5, -0.3, 0.2], [0.1, 0.4, -0.5]])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    e = xw.explain(layer, x, 1, "backtrace_contrastive")
    # unit 0 (t = .5 > 0): its negative contributor (x₂) carries R⁻ = 1; unit 1 (t = −.6): its negative
    # contributor (x₃) carries R⁺ = 1
    torch.testing.assert_close(e.extras["positive"], torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(e.extras["negative"], torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(e.attribution, torch.tensor([[0.0, -1.0, 1.0]]))
    assert e.extras["ledger"] and e.extras["ledger_negative"]


def test_contrastive_on_a_cnn_conserves_both_streams():
    model = _bias_free_cnn()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with unchanged(model):
        e = xw.explain(model, x, [1, 2], "backtrace_contrastive", multiplier=10)
    # every weighted unit has contributors of both signs or sends both streams to the one sign it has
    for key, absorbed in (("positive", "bias_absorbed"), ("negative", "bias_absorbed_negative")):
        total = e.extras[key].flatten(1).sum(1)
        torch.testing.assert_close(total, torch.full_like(total, 10.0), rtol=1e-5, atol=0)
        assert float(e.extras[absorbed].abs().max()) < 1e-4
    torch.testing.assert_close(e.attribution, e.extras["positive"] - e.extras["negative"])


def test_batch_equals_loop_and_is_deterministic(resnet18):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = xw.explain(resnet18, x, [0, 4, 7], "backtrace")
    again = xw.explain(resnet18, x, [0, 4, 7], "backtrace")
    assert torch.equal(batch.attribution, again.attribution)
    for i, target in enumerate([0, 4, 7]):
        single = xw.explain(resnet18, x[i : i + 1], target, "backtrace")
        torch.testing.assert_close(single.attribution, batch.attribution[i : i + 1], rtol=1e-4, atol=1e-7)


def test_slicing_the_batch_changes_nothing(resnet18, monkeypatch):
    """On the CPU a large unit's rule runs over slices of the batch (fewer fresh pages); the maps, both
    streams and the ledgers are those of one pass over the whole batch."""
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    whole = {m: xw.explain(resnet18, x, [1, 2, 3], m) for m in ("backtrace", "backtrace_contrastive")}
    monkeypatch.setattr(backtrace_module, "SLICE", 1)  # one sample per slice at every unit
    for method, expected in whole.items():
        got = xw.explain(resnet18, x, [1, 2, 3], method)
        torch.testing.assert_close(got.attribution, expected.attribution, rtol=1e-5, atol=1e-9)
        if method == "backtrace_contrastive":
            torch.testing.assert_close(
                got.extras["negative"], expected.extras["negative"], rtol=1e-5, atol=1e-9
            )
        for key in ("ledger", "ledger_negative") if method == "backtrace_contrastive" else ("ledger",):
            for name, row in expected.extras[key].items():
                torch.testing.assert_close(
                    got.extras[key][name]["passed"], row["passed"], rtol=1e-5, atol=1e-9
                )


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "densenet121"])
def test_torchvision_models_run_unchanged(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with unchanged(model):
        for method in ("backtrace", "backtrace_contrastive"):
            e = xw.explain(model, x, 3, method)
            assert e.attribution.shape == (1, 32, 32) and bool(torch.isfinite(e.attribution).all())
            total = e.extras["input_relevance"] + e.extras["bias_absorbed"]
            torch.testing.assert_close(total, torch.ones(1), rtol=1e-4, atol=0)
            assert float(e.attribution.abs().sum()) > 0
    if name == "mobilenet_v3_small":  # the squeeze-excitation gate gives all relevance to the signal
        gates = [row for key, row in e.extras["ledger"].items() if key.endswith("(gate ×)")]
        assert gates and all(torch.allclose(row["passed"], row["reached"]) for row in gates)


class _Exp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.exp(x) + x)


def test_an_operation_without_rule_raises_naming_it():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).eval()
    with unchanged(model), pytest.raises(UnsupportedModelError, match=r"layer_norm.*LayerNorm \('1'\)"):
        xw.explain(model, torch.randn(2, 3), 0, "backtrace")
    model = _Exp().eval()
    with unchanged(model), pytest.raises(UnsupportedModelError, match="exp"):
        xw.explain(model, torch.randn(2, 3), 0, "backtrace")


class _PadsItself(nn.Conv2d):
    """Like timm's Conv2dSame: the forward pads on its own, so the module's attributes do not describe the call."""

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0)


def test_a_convolution_with_its_own_forward_raises_naming_it():
    model = nn.Sequential(_PadsItself(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    for method in ("backtrace", "backtrace_contrastive"):
        with (
            unchanged(model),
            pytest.raises(UnsupportedModelError, match=r"_PadsItself \('0'\).*own forward"),
        ):
            xw.explain(model, torch.randn(1, 3, 6, 6), 0, method)


def test_multiplier_scales_and_is_validated():
    model = _mlp()
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    one = xw.explain(model, x, 0, "backtrace")
    hundred = xw.explain(model, x, 0, "backtrace", multiplier=100)
    torch.testing.assert_close(hundred.attribution, 100 * one.attribution)
    with pytest.raises(MethodError, match="multiplier"):
        xw.explain(model, x, 0, "backtrace", multiplier=0)
    adapter = ModelAdapter(model)
    assert xw.explain(adapter, x, lambda logits: logits[:, 1], "backtrace").attribution.shape == (2, 6)


def _reference(layers, activations, x, target, stream):
    """Backtrace written out with explicit contribution matrices c_ij = w_ji x_i and the unit rule
    :func:`coefficients`: the driver's fast paths (one transposed product, cached P and N) must agree."""
    inputs, units = [], []
    for layer, activation in zip(layers, activations):
        inputs.append(x)
        c = layer.weight * x[:, None, :]
        p, n = c.clamp(min=0).sum(-1), (-c).clamp(min=0).sum(-1)
        t = p - n + layer.bias
        units.append((c, p, n, t, activation))
        x = t if activation is None else activation[1](t)
    r = torch.zeros_like(x)
    r[:, target] = 1.0
    if stream < 0:
        r = (r == 0).to(x.dtype) / (x.shape[1] - 1)
    for layer, (c, p, n, t, activation) in zip(reversed(layers), reversed(units)):
        alpha, beta = coefficients(
            r, p, n, t, layer.bias, None if activation is None else activation[0], stream
        )
        r = (alpha[..., None] * c.clamp(min=0) + beta[..., None] * (-c).clamp(min=0)).sum(1)
    return r


def test_contrastive_units_with_one_sided_contributions_take_the_general_rule():
    """After a ReLU the streams usually go one to each side; a unit with t > 0 but no positive contributor
    (a bias keeps it on) or no negative one must still follow the stream rule exactly."""
    first = _linear([[-1.0, -1.0, 0.5], [1.0, 2.0, 0.0], [0.5, -0.5, 1.0]], [3.0, 0.0, 0.2])
    # the target's output takes only positive contributions (R⁺ to every hidden unit's positive side), the other
    # class's only negative ones (R⁻ to every hidden unit's negative side)
    second = _linear([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], [0.0, 0.0])
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    x = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.5, 1.0]])  # unit 0: P = 0 (t = 1); unit 1: N = 0
    e = xw.explain(model, x, 0, "backtrace_contrastive")
    acts = [(RELU, torch.relu), None]
    for key, stream in (("positive", 1), ("negative", -1)):
        with torch.no_grad():
            expected = _reference([first, second], acts, x, 0, stream)
        torch.testing.assert_close(e.extras[key], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("activation", ["relu", "tanh", "silu"])
def test_driver_agrees_with_explicit_contributions(activation):
    spec, function = {"relu": (RELU, torch.relu), "tanh": (TANH, torch.tanh), "silu": (SILU, F.silu)}[
        activation
    ]
    torch.manual_seed(4)
    layers = [nn.Linear(6, 16), nn.Linear(16, 12), nn.Linear(12, 5)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(3)
            layer.bias.normal_()
    module = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}[activation]
    model = nn.Sequential(layers[0], module(), layers[1], module(), layers[2]).eval()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(5)) * 2
    acts = [(spec, function), (spec, function), None]
    for method, streams in (("backtrace", (0,)), ("backtrace_contrastive", (1, -1))):
        e = xw.explain(model, x, 2, method)
        got = [e.attribution] if method == "backtrace" else [e.extras["positive"], e.extras["negative"]]
        for stream, value in zip(streams, got):
            with torch.no_grad():
                expected = _reference(layers, acts, x, 2, stream)
            torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)
