"""``explain``: the single entry point from a model, an image and a method name to an Explanation."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LayerError, MethodError
from .explanation import Explanation
from .model import ModelAdapter, Target, as_adapter
from .registry import get_method


def explain(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    target: Target = None,
    method: str = "saliency",
    layer: str | nn.Module | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``model``'s output for ``target`` on the batch ``x`` with a registered ``method``.

    Args:
        model: an ``nn.Module`` or a ModelAdapter.
        x: model input, N×C×H×W or C×H×W float (already normalised; see ``load_image``).
        target: class index, one per sample, None for the predicted class, or a callable on the logits.
        method: a name from ``xai_widgets.methods()``.
        layer: for layer methods (CAM family), a catalogue name or module; default: the last spatial layer.
        **options: method options (e.g. ``steps`` for integrated_gradients).

    Returns:
        An Explanation with an N×H×W signed map at input resolution.

    The model runs in eval behaviour and is left exactly as it was, also when the call raises.
    """
    adapter = as_adapter(model)
    info = get_method(method)
    _check_options(info.name, info.fn, options)
    x = adapter.prepare(x)
    layer_name = None
    if info.needs_layer:
        entry = adapter.default_cam_layer() if layer is None else adapter.resolve_layer(layer)
        if not entry.spatial:
            raise LayerError(
                f"method {info.name!r} needs a layer with a spatial C×H×W output; {entry.name!r} "
                f"({entry.kind}) has output shape {entry.out_shape}"
            )
        layer_name = entry.name
    elif layer is not None:
        raise LayerError(f"method {info.name!r} does not use a layer; leave layer=None")
    with adapter.evaluating():
        target = adapter.resolve_target(target, x)
        kwargs = {"layer": layer_name} if info.needs_layer else {}
        result = info.fn(adapter, x, target, **kwargs, **options)
        return _as_explanation(adapter, result, x, target, info.name, layer_name, options)


def _check_options(name: str, fn: Any, options: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("adapter", "x", "target", "layer")]
    unknown = [k for k in options if k not in params]
    if unknown:
        raise MethodError(
            f"method {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )


def _as_explanation(
    adapter: ModelAdapter,
    result: Any,
    x: Tensor,
    target: Any,
    method: str,
    layer: str | None,
    options: dict[str, Any],
) -> Explanation:
    """Wrap what a method returned (Explanation or tensor) into a complete Explanation."""
    if isinstance(result, Explanation):
        return result
    if not isinstance(result, Tensor):
        raise MethodError(
            f"method {method!r} returned {type(result).__name__}; expected an Explanation or a tensor"
        )
    result = result.detach()
    if result.ndim == 4 and result.shape[1:] == x.shape[1:]:
        pixel, attribution = result, result.sum(dim=1)
        layer_map = None
    elif result.ndim == 3:
        pixel, layer_map = None, result
        attribution = result
        if result.shape[1:] != x.shape[2:]:
            attribution = F.interpolate(
                result[:, None], size=x.shape[2:], mode="bilinear", align_corners=False
            )[:, 0]
    else:
        raise MethodError(
            f"method {method!r} returned a tensor of shape {tuple(result.shape)}; expected N×C×H×W like the input "
            "or an N×h×w map"
        )
    with torch.no_grad():
        score = adapter.score(adapter.forward(x), target)
    return Explanation(
        attribution=attribution,
        method=method,
        target=target if isinstance(target, Tensor) else None,
        score=score.detach(),
        pixel=pixel,
        layer=layer,
        layer_map=layer_map,
        options=dict(options),
    )
