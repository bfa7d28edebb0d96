"""Composites: where each rule goes, by module type and position in the forward.

A composite turns a model into ``{module: rule}`` for :meth:`ModelAdapter.rules`. The LRP composites share one
base map (zennit's defaults):

======================================  ==============================================================
module                                  rule
======================================  ==============================================================
first Conv/Linear to run                ``first`` (zᴮ box or w² in the composites that name one)
other Conv1d/2d/3d                      ``conv``
other Linear                            ``dense``
BatchNorm after a Conv/Linear           folded into that layer's rule (:class:`.canonizers.MergeBatchNorm`)
BatchNorm elsewhere                     ε on its elementwise affine map
ReLU (module or functional)             :class:`.rules.PassReLU` (relevance unchanged)
max pooling                             the gradient (relevance to the window's winner)
other elementwise activations           :class:`.rules.Pass` (relevance unchanged)
Dropout, Identity, Flatten, zero pads   the gradient (identities in eval mode)
average pooling, mean, sum, upsampling  :class:`.rules.Norm` (proportional to each input)
residual add (functional ``+``)         :class:`.rules.Sum` (proportional to each branch)
LayerNorm, attention, softmax,          :mod:`.transformer_rules` on their functional calls: σ constant, CP-LRP
products, ``F.linear``, GELU/SiLU        (``attention='attnlrp'``: AttnLRP), gates signal-take-all, ε on linear
StochasticDepth, DropPath, Permute      the gradient (identities in eval mode)
anything else that runs                 UnsupportedModelError naming the module type
======================================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .canonizers import AVERAGE_MODULES, MergeBatchNorm
from .rules import (
    GUARD,
    AlphaBeta,
    Epsilon,
    Gamma,
    Ledger,
    LinearRule,
    Norm,
    Pass,
    PassReLU,
    ReLURule,
    Rule,
    Sum,
    Unsupported,
    ZBox,
    ZPlus,
)
from .transformer_rules import identity_module

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_GRADIENT = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    # averaging modules: their functional call gets the Norm rule from FunctionalRules
    *AVERAGE_MODULES,
)
_ELEMENTWISE = (
    nn.LeakyReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.PReLU,
    nn.RReLU,
    nn.Softsign,
    nn.LogSigmoid,
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
STANDARD_FORWARD = {cls.forward for cls in (nn.Linear, *_CONV)}


@dataclass
class LRPComposite:
    """An LRP composite: rules for the first layer, the other convolutions and the dense layers.

    ``first`` None means the first layer gets ``conv`` (or ``dense``) like the others. ``epsilon`` is the
    absolute ε of a lone BatchNorm's ε rule; ``stabilizer`` the relative zero-division guard of the residual
    and averaging splits (:func:`.rules.divide`).
    """

    conv: LinearRule
    dense: LinearRule
    first: LinearRule | None = None
    epsilon: float = 1e-6
    stabilizer: float = GUARD
    name: str = "lrp"
    attention: str = "cp"
    sum: Sum = field(init=False)
    average: Norm = field(init=False)
    relu: PassReLU = field(init=False)

    def __post_init__(self) -> None:
        self.sum = Sum(self.stabilizer)
        self.average = Norm(self.stabilizer)
        self.relu = PassReLU()

    def assign(self, model: nn.Module, ledger: Ledger | None = None) -> dict[nn.Module, Rule]:
        """The rule of every module that needs one. The first layer is the first Conv/Linear that runs."""
        merge = MergeBatchNorm()
        assignment: dict[nn.Module, Rule] = {}
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, *_CONV)) and type(module).forward in STANDARD_FORWARD:
                rule = self.dense if isinstance(module, nn.Linear) else self.conv
                first = None if self.first is None else self.first.bind(name, ledger)
                assignment[module] = merge.track(rule.bind(name, ledger), first)
            elif isinstance(module, _BATCHNORM):
                assignment[module] = merge.norm(Epsilon(self.epsilon).bind(name, ledger))
            elif isinstance(module, nn.ReLU):
                assignment[module] = self.relu
            else:
                rule = self._other(module)
                if rule is not None:
                    assignment[module] = rule.bind(name, ledger)
        return assignment

    def _other(self, module: nn.Module) -> Rule | None:
        if isinstance(module, (nn.Linear, *_CONV)):
            return Unsupported(self.name, f"a {type(module).__name__} subclass with its own forward")
        if isinstance(module, _GRADIENT) or isinstance(module, _CONTAINERS) or identity_module(module):
            return None
        if isinstance(module, _ELEMENTWISE):
            return Pass()
        if len(module._modules) > 0:
            return None
        if isinstance(module, (nn.LayerNorm, nn.Softmax)):
            return None  # their functional call gets the transformer rule (LayerNorm: σ constant)
        if isinstance(module, (nn.GroupNorm, nn.LocalResponseNorm, nn.modules.instancenorm._InstanceNorm)):
            return Unsupported(
                self.name, "it normalises by statistics of its own input, for which no LRP rule is defined"
            )
        return Unsupported(self.name, "no LRP rule is defined for this module type")


def epsilon(epsilon: float = 1e-6) -> LRPComposite:
    """LRP-ε on every Conv and Linear layer."""
    rule = Epsilon(epsilon)
    return LRPComposite(conv=rule, dense=rule, epsilon=epsilon, name="lrp_epsilon")


def uniform(rule: LinearRule, name: str, epsilon: float = 1e-6) -> LRPComposite:
    """One rule (γ, z⁺, αβ) on every Conv and Linear layer."""
    return LRPComposite(conv=rule, dense=rule, epsilon=epsilon, name=name)


def epsilon_gamma_box(
    low,
    high,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    middle: str = "alpha1beta0",
    stabilizer: float = GUARD,
) -> LRPComposite:
    """The recommended LRP composite: zᴮ on the first layer, α1β0 (Kohlbrenner et al. 2020) or, with
    ``middle='gamma'``, γ (Montavon et al. 2019; zennit's ``EpsilonGammaBox``) on the other convolutions, ε on
    the dense layers."""
    conv = Gamma(gamma, stabilizer) if middle == "gamma" else AlphaBeta(1.0, 0.0, stabilizer)
    return LRPComposite(
        conv=conv,
        dense=Epsilon(epsilon),
        first=ZBox(low, high, stabilizer),
        epsilon=epsilon,
        stabilizer=stabilizer,
        name="lrp_composite",
    )


def deep_taylor(first: LinearRule, stabilizer: float = GUARD) -> LRPComposite:
    """Deep Taylor decomposition (Montavon et al. 2017): z⁺ on every layer, zᴮ or w² on the first."""
    rule = ZPlus(stabilizer)
    return LRPComposite(conv=rule, dense=rule, first=first, stabilizer=stabilizer, name="dtd")


def relu_rules(model: nn.Module, rule: ReLURule) -> dict[nn.Module, Rule]:
    """The modified-backprop composite: ``rule`` on every ``nn.ReLU``; everything else keeps its gradient."""
    return {module: rule for module in model.modules() if isinstance(module, nn.ReLU)}
