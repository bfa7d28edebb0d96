"""``explain``: the single entry point from a model, an image and a method name to an Explanation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LayerError, MethodError
from .explanation import Explanation, flag_degenerate
from .model import ModelAdapter, Target, as_adapter, gradients_enabled
from .registry import MethodInfo, get_method


@gradients_enabled()
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
        x: model input, N×C×H×W or C×H×W float (already normalised; see ``load_image``), or N×D feature
            vectors for a model that takes them (then the map is N×D and layer methods raise).
        target: class index, one per sample, None for the predicted class, or a callable on the logits.
        method: a name from ``xai_widgets.methods()``.
        layer: for layer methods (CAM family), a catalogue name or module; default: the last spatial layer.
        **options: method options (e.g. ``steps`` for integrated_gradients).

    Returns:
        An Explanation with an N×H×W signed map at input resolution.

    The model runs in eval behaviour and is left exactly as it was, also when the call raises. Gradients are
    enabled for the call, so it works inside ``torch.no_grad()`` and ``torch.inference_mode()``. A plain
    module's adapter is built once and reused while the module's structure is unchanged (see ``as_adapter``).
    """
    adapter = as_adapter(model)
    info = get_method(method)
    _check_options(info, options)
    x = adapter.prepare(x)
    layer_name = None
    if info.needs_layer and x.ndim == 2:
        raise MethodError(
            f"method {info.name!r} needs images (a layer with a C×H×W map); {adapter.name} takes N×D feature "
            "vectors: use a gradient, LRP or backtrace method"
        )
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
        if info.batched or x.shape[0] == 1:
            result = info.fn(adapter, x, target, **kwargs, **options)
            explanation = _as_explanation(adapter, result, x, target, info.name, layer_name, options)
            return flag_degenerate(explanation)
        parts = [  # a method that takes one image at a time runs image by image
            _as_explanation(
                adapter,
                info.fn(adapter, x[i : i + 1], _row(target, i), **kwargs, **options),
                x[i : i + 1],
                _row(target, i),
                info.name,
                layer_name,
                options,
            )
            for i in range(x.shape[0])
        ]
        return flag_degenerate(_concatenate(parts))


def _check_options(info: MethodInfo, options: dict[str, Any]) -> None:
    if info.options is None:
        return
    unknown = [k for k in options if k not in info.options]
    if unknown:
        raise MethodError(
            f"method {info.name!r} does not accept option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(info.options)) or 'none'}"
        )


def _row(target: Any, i: int) -> Any:
    return target[i : i + 1] if isinstance(target, Tensor) else target


def _concatenate(parts: list[Explanation]) -> Explanation:
    """One Explanation of a batch from per-image ones (tensor extras with one row per image are joined)."""
    first = parts[0]

    def join(values: list[Any]) -> Any:
        if all(isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == 1 for v in values):
            return torch.cat(values)
        return values[0] if all(v is None for v in values) else values

    extras = {key: join([p.extras.get(key) for p in parts]) for key in first.extras}
    return Explanation(
        attribution=torch.cat([p.attribution for p in parts]),
        method=first.method,
        target=join([p.target for p in parts]),
        score=torch.cat([p.score for p in parts]),
        pixel=join([p.pixel for p in parts]),
        layer=first.layer,
        layer_map=join([p.layer_map for p in parts]),
        options=first.options,
        extras=extras,
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
        if (
            x.ndim == 2
            and result.attribution.shape != x.shape
            and getattr(result.pixel, "shape", None) == x.shape
        ):
            result.attribution = result.pixel  # N×D feature vectors: the map is the per-feature relevance
        return result
    if not isinstance(result, Tensor):
        raise MethodError(
            f"method {method!r} returned {type(result).__name__}; expected an Explanation or a tensor"
        )
    result = result.detach()
    if result.shape == x.shape and x.ndim == 2:
        pixel, attribution, layer_map = result, result, None
    elif result.ndim == 4 and result.shape[1:] == x.shape[1:]:
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
