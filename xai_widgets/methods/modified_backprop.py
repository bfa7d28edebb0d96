"""Modified backprop: gradients whose ReLU backward is replaced by a rule (see :mod:`.rules`).

- ``guided_backprop`` (Springenberg et al. 2015): at each ReLU, g_in = 1[x > 0] · max(g_out, 0).
- ``deconvnet`` (Zeiler and Fergus 2014): g_in = max(g_out, 0), no forward gate.
- ``rectgrad`` (Kim et al. 2019): g_in = 1[x > 0] · 1[a ⊙ g_out > τ_q] · g_out, with τ_q the q-th
  percentile of a ⊙ g_out over the layer (a: the ReLU's output).
- ``guided_gradcam`` (Selvaraju et al. 2017): Guided Backprop ⊙ the Grad-CAM map upsampled to the input.

Each is one forward and one ``torch.autograd.grad``. The rule sits on every ``nn.ReLU`` module (in-place ones
are made out-of-place for the call) and on functional ``F.relu`` calls made outside one, which Captum misses;
linear layers, pooling and normalisation keep their gradient, as in Captum. The rules are defined for ReLU:
a model that uses another activation (GELU, SiLU, Hardswish, LeakyReLU, ELU, …, as a module or a functional
call) raises UnsupportedModelError naming it, instead of returning what would silently be the plain gradient
there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..explain import explain
from ..explanation import Explanation
from ..model import ModelAdapter
from ..registry import register_method
from .canonizers import FunctionalRules, inplace_error
from .composites import relu_rules
from .rules import DeconvReLU, GuidedReLU, RectifiedReLU, ReLURule, Unsupported

# activations the ReLU rules are not defined for: modules, and their functional forms
_OTHER_ACTIVATIONS = (
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.ReLU6,
    nn.Hardtanh,
)
_OTHER_FUNCTIONS = (
    F.gelu,
    F.silu,
    F.hardswish,
    F.mish,
    F.leaky_relu,
    F.leaky_relu_,
    F.prelu,
    F.rrelu,
    F.elu,
    F.elu_,
    F.selu,
    F.celu,
    F.softplus,
    F.relu6,
    F.hardtanh,
    F.hardtanh_,
)
_REASON = "the rule is defined for ReLU networks; use a gradient method or LRP for this model"


def modified_gradient(
    adapter: ModelAdapter, x: Tensor, target: Any, rule: ReLURule, method: str, options: dict
) -> Explanation:
    """The gradient of the target score w.r.t. the input with ``rule`` at every ReLU: one forward, one
    backward."""
    source = x.detach().clone().requires_grad_(True)
    mode = FunctionalRules(adapter.model, source, method, relu=rule, unsupported=(_OTHER_FUNCTIONS, _REASON))
    assignment = relu_rules(adapter.model, rule)
    for name, module in adapter.model.named_modules():
        if isinstance(module, _OTHER_ACTIVATIONS):
            assignment[module] = Unsupported(method, _REASON).bind(name, None)
    try:
        with adapter.evaluating(), adapter.rules(assignment), mode:
            logits = adapter.forward(source)
        score = adapter.score(logits, target)
        (grad,) = torch.autograd.grad(score.sum(), source)
    except RuntimeError as error:
        unsupported = inplace_error(method, error)
        if unsupported is None:
            raise
        raise unsupported from error
    return Explanation(
        attribution=grad.sum(1),
        method=method,
        target=target if isinstance(target, Tensor) else None,
        score=score.detach(),
        pixel=grad,
        options=dict(options),
    )


@register_method("guided_backprop", family="modified_backprop", cost="cheap")
def guided_backprop(adapter: ModelAdapter, x: Tensor, target: Any) -> Explanation:
    """Guided Backprop (Springenberg et al. 2015): only positive gradients pass active ReLUs."""
    return modified_gradient(adapter, x, target, GuidedReLU(), "guided_backprop", {})


@register_method("deconvnet", family="modified_backprop", cost="cheap")
def deconvnet(adapter: ModelAdapter, x: Tensor, target: Any) -> Explanation:
    """Deconvnet (Zeiler and Fergus 2014): the ReLU is applied to the backward signal only."""
    return modified_gradient(adapter, x, target, DeconvReLU(), "deconvnet", {})


@register_method("rectgrad", family="modified_backprop", cost="cheap")
def rectgrad(adapter: ModelAdapter, x: Tensor, target: Any, q: float = 98.0) -> Explanation:
    """RectGrad (Kim et al. 2019): at each ReLU only units whose activation × gradient is above the q-th
    percentile of the layer pass their gradient (q = 98 keeps the top 2%)."""
    return modified_gradient(adapter, x, target, RectifiedReLU(q), "rectgrad", {"q": q})


@register_method("guided_gradcam", family="cam", needs_layer=True, cost="moderate", every_layer=False)
def guided_gradcam(adapter: ModelAdapter, x: Tensor, target: Any, layer: str) -> Explanation:
    """Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop × the Grad-CAM map of ``layer``, upsampled
    bilinearly to the input. The product is kept unnormalised (Grad-CAM is ≥ 0, so signs are Guided
    Backprop's)."""
    guided = modified_gradient(adapter, x, target, GuidedReLU(), "guided_gradcam", {})
    cam = explain(adapter, x, target, "gradcam", layer=layer)
    pixel = guided.pixel * cam.attribution.unsqueeze(1)
    return Explanation(
        attribution=pixel.sum(1),
        method="guided_gradcam",
        target=guided.target,
        score=guided.score,
        pixel=pixel,
        layer=layer,
        layer_map=cam.layer_map,
        extras={"guided_backprop": guided.pixel, "gradcam": cam.attribution},
    )
