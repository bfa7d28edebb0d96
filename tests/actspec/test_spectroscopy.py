"""Spectroscopy on hand-built networks whose hidden units feed a known Boolean function of their states."""

import pytest
import torch
from torch import nn

from xai_widgets import Cancelled, InputError, LayerError, MethodError
from xai_widgets.actspec import compare, select_units, spectroscopy, unit_maps
from xai_widgets.model import ModelAdapter

MAJ3 = {(0,): 0.5, (1,): 0.5, (2,): 0.5, (0, 1, 2): -0.5}
AND2 = {(): -0.5, (0,): 0.5, (1,): 0.5, (0, 1): 0.5}


class Switchboard(nn.Module):
    """Input i → hidden unit i (identity fc1, in-place ReLU, dropout); the head votes Maj3 of units 0, 1, 2.

    A unit is on at its observed value 1 and off at 0, so class 1 wins exactly when two of the three units
    are on: the indicator of class 1 is Maj3 of the units' states. Units 3–5 carry values the head ignores.
    """

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(6, 6)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(6, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(6))
            self.fc1.bias.zero_()
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()
            self.fc2.weight[1, :3] = 1.0
            self.fc2.bias[1] = -1.5

    def forward(self, x):
        return self.fc2(self.dropout(self.relu(self.fc1(self.flatten(x)))))


class ProductHead(nn.Module):
    """logit 1 = h5 + 4 (h3 − ½)(h17 − ½) of 24 hidden units: with h = (1 + b)/2 that is ½ + ½b5 + b3·b17."""

    def forward(self, h):
        value = h[:, 5] + 4 * (h[:, 3] - 0.5) * (h[:, 17] - 0.5)
        return torch.stack((torch.zeros_like(value), value), dim=1)


def product_network() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Dropout(0.5), ProductHead())


def ones(n: int = 6) -> torch.Tensor:
    return torch.ones(1, 1, 1, n)


def test_recovers_majority_exactly_in_train_mode_with_dropout(guard):
    torch.manual_seed(0)
    model = Switchboard().train()  # dropout active in the user's mode: evaluation must switch it off
    with guard(model):
        spectrum = spectroscopy(model, "relu", [0, 1, 2], inputs=ones(), target=1)
    assert dict(spectrum.coefficients) == pytest.approx(MAJ3, abs=1e-12)
    assert model.training and model.relu.inplace
    assert spectrum.options["layer"] == "relu" and spectrum.options["forwards"] >= 8


def test_units_none_picks_the_relevant_units(guard):
    model = Switchboard().eval()
    with guard(model):
        assert sorted(select_units(ModelAdapter(model), "relu", ones(), 3, target=1)) == [0, 1, 2]
        spectrum = spectroscopy(model, "relu", inputs=ones(), target=1, n_units=3)
    assert sorted(spectrum.units) == [0, 1, 2]
    assert dict(spectrum.coefficients) == pytest.approx(MAJ3)


def test_several_inputs_average_and_on_mean():
    model = Switchboard()
    # on the second input unit 2 is silent: "observed" keeps it off there, so f there is AND(unit 0, unit 1)
    inputs = torch.tensor([[1.0, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1]]).view(2, 1, 1, 6)
    spectrum = spectroscopy(model, "relu", [0, 1, 2], inputs=inputs, target=1)
    expected = {s: (MAJ3.get(s, 0.0) + AND2.get(s, 0.0)) / 2 for s in set(MAJ3) | set(AND2)}
    assert dict(spectrum.coefficients) == pytest.approx(expected)
    assert spectrum.options["inputs"] == 2 and spectrum.options["target"] == 1
    # "mean": unit 2's mean positive value over the inputs is 1, so it switches on both: Maj3 again
    assert dict(
        spectroscopy(model, "relu", [0, 1, 2], inputs=inputs, target=1, on="mean").coefficients
    ) == pytest.approx(MAJ3)
    # on = 2 for every unit, off = (0, 0, 1): class 1 unless all three are off, so f = OR3 in ±1:
    # f = 1 − 2·Π(1 − b_i)/2 = ¾ − ¼ Σ_{S≠∅} (−1)^|S| χ_S
    spectrum = spectroscopy(
        model, "relu", [0, 1, 2], inputs=inputs, target=1, on=2.0, off=torch.tensor([0.0, 0, 1])
    )
    expected = {(): 0.75, (0,): 0.25, (1,): 0.25, (2,): 0.25, (0, 1): -0.25, (0, 2): -0.25, (1, 2): -0.25}
    assert dict(spectrum.coefficients) == pytest.approx({**expected, (0, 1, 2): 0.25})


def test_logit_function_is_the_polynomial_of_the_head(guard):
    model = product_network().train()
    with guard(model):
        spectrum = spectroscopy(
            model, "1", None, inputs=ones(24), target=1, f="logit", method="search", tau=0.3
        )
    assert spectrum.units == tuple(range(24))  # search mode switches every unit of the layer by default
    assert dict(spectrum.coefficients) == pytest.approx({(): 0.5, (5,): 0.5, (3, 17): 1.0}, abs=0.03)
    exact = spectroscopy(model, "1", [3, 5, 17, 0], inputs=ones(24), target=1, f="logit")
    assert dict(exact.coefficients) == pytest.approx({(): 0.5, (5,): 0.5, (3, 17): 1.0}, abs=1e-6)
    probability = spectroscopy(model, "1", [5], inputs=ones(24), target=1, f="probability")
    # the other units stay at 1, so the logits are (0, h5 + 1): P(class 1) = sigmoid(2) on, sigmoid(1) off
    on, off = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(1.0))
    assert probability.value(()) == pytest.approx(float(on + off) / 2, abs=1e-6)
    assert probability.value((5,)) == pytest.approx(float(on - off) / 2, abs=1e-6)


class ChannelBoard(nn.Module):
    """Conv channels as units: 1×1 identity conv on 3 channels, ReLU, global average pool, Maj3 head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[0.0, 0, 0], [1, 1, 1]]))
            self.fc.bias.copy_(torch.tensor([0.0, -1.5]))

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_conv_channels_switch_as_whole_maps(guard):
    model = ChannelBoard().eval()
    x = torch.zeros(2, 3, 4, 4)
    x[0, :, :2] = 2.0  # half of each map at 2: a channel's pooled value is 1 when on, 0 when off
    x[1, :, :, 1::2] = 2.0
    with guard(model):
        spectrum = spectroscopy(model, "relu", inputs=x, target=1)
    assert sorted(spectrum.units) == [0, 1, 2]  # all three channels (fewer than 16)
    assert dict(spectrum.coefficients) == pytest.approx(MAJ3)
    # on = 2 on every element: a switched-on channel pools to 2, one alone is enough for class 1
    assert spectroscopy(model, "relu", [0, 1, 2], inputs=x, target=1, on=2.0).value(()) == pytest.approx(0.75)


class Residual(nn.Module):
    """A skip connection from below the switched layer: the switched batch must not be broadcast."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        y = self.conv2(self.act(self.conv1(x))) + x
        return self.head(y.mean((2, 3)))


def test_skip_connections_fall_back_to_repeated_inputs_and_averages_are_linear():
    model = Residual().eval()
    x = torch.randn(3, 2, 6, 6)
    together = spectroscopy(model, "act", [0, 1, 2, 3], inputs=x, target=2, f="logit")
    assert together.options["route"] == "repeated"
    alone = [
        spectroscopy(model, "act", [0, 1, 2, 3], inputs=x[i : i + 1], target=2, f="logit") for i in range(3)
    ]
    assert alone[0].options["route"] == "expanded"  # one input broadcasts correctly along the skip
    torch.testing.assert_close(together.dense, sum(s.dense for s in alone) / 3)


def test_compare_runs_each_model_and_reports_progress():
    models = {"a": Switchboard(0.0), "b": Switchboard(0.5)}
    calls = []
    spectra = compare(
        models, "relu", inputs=ones(), target=1, n_units=3, progress=lambda d, t: calls.append((d, t))
    )
    assert set(spectra) == {"a", "b"}
    assert all(dict(s.coefficients) == pytest.approx(MAJ3) for s in spectra.values())
    assert calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1
    assert spectra["a"].mean_order() == pytest.approx(1.5)


def test_cancel_and_errors_leave_the_model_unchanged(guard):
    model = Switchboard().train()

    def stop(done, total):
        raise Cancelled("superseded")

    with guard(model):
        with pytest.raises(Cancelled):
            spectroscopy(model, "relu", [0, 1, 2], inputs=ones(), target=1, progress=stop)
        with pytest.raises(LayerError, match="unknown layer"):
            spectroscopy(model, "rleu", [0], inputs=ones(), target=1)
        with pytest.raises(InputError, match="distinct indices"):
            spectroscopy(model, "relu", [0, 0], inputs=ones(), target=1)
        with pytest.raises(InputError, match="distinct indices"):
            spectroscopy(model, "relu", [9], inputs=ones(), target=1)
        with pytest.raises(MethodError, match="unknown f"):
            spectroscopy(model, "relu", [0], inputs=ones(), target=1, f="loss")
        with pytest.raises(InputError, match="on must be"):
            spectroscopy(model, "relu", [0], inputs=ones(), target=1, on="max")
        with pytest.raises(InputError, match="shape"):
            spectroscopy(model, "relu", [0, 1], inputs=ones(), target=1, off=torch.zeros(3))
    assert model.training


def test_a_reused_module_is_refused():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 2))
    with pytest.raises(LayerError, match="runs 2 times"):
        spectroscopy(model, "2", [0], inputs=torch.ones(1, 1, 2, 2), target=0)


def test_unit_maps_show_channels_weights_or_gradients(guard):
    torch.manual_seed(0)
    conv = ChannelBoard().eval()
    x = torch.rand(1, 3, 4, 4)
    with guard(conv):
        maps = unit_maps(conv, "relu", [2, 0], x)
    torch.testing.assert_close(maps, torch.relu(x[0, [2, 0]]))  # the identity conv's channels, after ReLU
    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2)
    )
    image = torch.rand(1, 1, 4, 4)
    torch.testing.assert_close(
        unit_maps(mlp, "2", [1, 5], image), mlp[1].weight.detach()[[1, 5]].view(2, 4, 4)
    )
    source = image.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(mlp[:5](source)[0, 3], source)
    torch.testing.assert_close(unit_maps(mlp, "4", [3], image), expected[:, 0])
