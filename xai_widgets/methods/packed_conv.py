"""Convolutions with weights kept in oneDNN's own layout, for the derived weights the rules reuse (CPU).

On the CPU every ``conv2d`` call and every transposed product first reorders its weight into oneDNN's blocked
layout. For the weights a rule derives once and keeps (|W|, W⁺, |W⁻| of :func:`.rules.derived_weight`) that
reorder is repeated on every explanation; for a batch of one on resnet18's 256- and 512-channel layers the
call then takes 20–50% less time without it. Here such a weight is reordered once per layer geometry, with the
reorder torch's own compiler uses for frozen weights (``torch.ops.mkldnn``), and the result is kept beside the
weight while it lives (memory: one more copy of each kept weight per geometry it is used with).

Only float32 2-D convolutions on the CPU of weights marked with :func:`keep` (at least :data:`LARGE` elements)
take this path; anything else, or a torch build whose oneDNN ops are missing or refuse the call, returns None
and the caller runs the plain operation. The first failure switches the path off for the process, so a build
without these ops costs one try. The results equal the plain operation's up to float32 rounding (oneDNN sums
in another order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

_KEPT: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> {geometry: oneDNN weight}
_ENABLED = [torch.backends.mkldnn.is_available()]  # off for good after the first failure
LARGE = 1 << 18  # elements: smaller weights reorder fast, and oneDNN's output layout costs a copy


def keep(weight: Tensor) -> None:
    """Mark ``weight`` (a derived weight that lives across explanations) for the oneDNN layout."""
    if (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.ndim == 4
        and weight.numel() >= LARGE
    ):
        _KEPT.setdefault(weight, {})


def conv(
    x: Tensor, weight: Tensor, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1
) -> Tensor | None:
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups)``, or None where this path does not
    apply."""
    geometry = _geometry(x, weight, stride, padding, dilation, groups)
    if geometry is None:
        return None
    return _run(_KEPT[weight], ("conv", *geometry), weight, x, _forward)


def conv_transpose(
    s: Tensor,
    weight: Tensor,
    size: tuple,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor | None:
    """(∂ conv2d(x, W)/∂x)ᵀ s for an input of spatial ``size``, or None where this path does not apply."""
    geometry = _geometry(s, weight, stride, padding, dilation, groups)
    if geometry is None:
        return None
    padding, stride, dilation, groups = geometry
    kernel = weight.shape[2:]
    extra = tuple(
        size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1 - (s.shape[2 + i] - 1) * stride[i]
        for i in range(2)
    )
    if min(extra) < 0 or any(e >= max(st, dl) for e, st, dl in zip(extra, stride, dilation)):
        return None
    return _run(_KEPT[weight], ("transpose", padding, extra, stride, dilation, groups), weight, s, _transpose)


def of_module(module: nn.Module) -> dict | None:
    """The geometry keywords of ``module``'s convolution, or None for a module this path does not serve."""
    if not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros":
        return None
    return {
        "stride": module.stride,
        "padding": module.padding,
        "dilation": module.dilation,
        "groups": module.groups,
    }


def _geometry(
    x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any, groups: int
) -> tuple | None:
    if not _ENABLED[0] or not torch.backends.mkldnn.enabled or weight not in _KEPT:
        return None
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.ndim != 4 or not x.is_contiguous():
        return None
    pairs = [_pair(v) for v in (padding, stride, dilation)]
    if any(p is None for p in pairs):
        return None
    return (*pairs, int(groups))


def _pair(value: Any) -> tuple[int, int] | None:
    """(a, b) from an int or a pair of ints; None for anything else (``padding='same'``)."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _run(packs: dict, geometry: tuple, weight: Tensor, x: Tensor, op: Any) -> Tensor | None:
    stamp = (weight._version, weight.data_ptr())
    try:
        hit = packs.get(geometry)
        if hit is None or hit[0] != stamp:
            hit = packs[geometry] = (stamp, _reorder(geometry, weight))
        return op(geometry, hit[1], x)
    except (RuntimeError, AttributeError, TypeError):  # an op missing from the build raises a RuntimeError
        _ENABLED[0] = False
        return None


def _reorder(geometry: tuple, weight: Tensor) -> Tensor:
    if geometry[0] == "conv":
        _, padding, stride, dilation, groups = geometry
        return torch.ops.mkldnn._reorder_convolution_weight(weight, padding, stride, dilation, groups, None)
    _, padding, extra, stride, dilation, groups = geometry
    return torch.ops.mkldnn._reorder_convolution_transpose_weight(
        weight, padding, extra, stride, dilation, groups, None
    )


def _forward(geometry: tuple, packed: Tensor, x: Tensor) -> Tensor:
    _, padding, stride, dilation, groups = geometry
    return torch.ops.mkldnn._convolution_pointwise(
        x, packed, None, padding, stride, dilation, groups, "none", [], ""
    ).contiguous()


def _transpose(geometry: tuple, packed: Tensor, s: Tensor) -> Tensor:
    _, padding, extra, stride, dilation, groups = geometry
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        s, packed, None, padding, extra, stride, dilation, groups, "none", [], ""
    ).contiguous()
