"""The method registry: names with metadata that feed ``explain`` and every widget's method menu."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import MethodError

FAMILIES = ("gradient", "modified_backprop", "lrp", "cam", "backtrace", "custom")
COSTS = ("cheap", "moderate", "expensive")


@dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    ``fn(adapter, x, target, layer=None, **options)`` returns an Explanation or a tensor (N×C×H×W pixel map,
    or N×H×W / N×h×w map); ``x`` is a validated batch on the adapter's device and ``target`` a LongTensor of
    N indices or a callable on the logits. ``needs_layer`` methods get the layer's catalogue name.
    """

    name: str
    fn: Callable[..., Any]
    family: str = "custom"
    needs_layer: bool = False
    cost: str = "cheap"
    batched: bool = True
    signed: bool = True
    description: str = ""


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(
    name: str,
    fn: Callable[..., Any] | None = None,
    *,
    family: str = "custom",
    needs_layer: bool = False,
    cost: str = "moderate",
    batched: bool = True,
    signed: bool = True,
    description: str = "",
    overwrite: bool = False,
) -> Any:
    """Add a method (also usable as a decorator). It then appears in ``explain`` and in every widget.

    Example (a Captum attribution as an xai_widgets method):
        >>> from captum.attr import Occlusion  # doctest: +SKIP
        >>> def occlusion(adapter, x, target, **options):  # doctest: +SKIP
        ...     return Occlusion(adapter.model).attribute(x, target=target, sliding_window_shapes=(3, 8, 8))
        >>> register_method("occlusion", occlusion, cost="expensive")  # doctest: +SKIP
    """
    if fn is None:
        return lambda f: register_method(
            name,
            f,
            family=family,
            needs_layer=needs_layer,
            cost=cost,
            batched=batched,
            signed=signed,
            description=description,
            overwrite=overwrite,
        )
    if not isinstance(name, str) or not name:
        raise MethodError("a method name must be a non-empty string")
    if not callable(fn):
        raise MethodError(f"method {name!r}: fn must be callable, got {type(fn).__name__}")
    if family not in FAMILIES:
        raise MethodError(f"method {name!r}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if cost not in COSTS:
        raise MethodError(f"method {name!r}: cost must be one of {', '.join(COSTS)}, got {cost!r}")
    if name in _REGISTRY and not overwrite:
        raise MethodError(
            f"a method named {name!r} is already registered (pass overwrite=True to replace it)"
        )
    doc = description or (fn.__doc__ or "").strip().split("\n")[0]
    _REGISTRY[name] = MethodInfo(name, fn, family, needs_layer, cost, batched, signed, doc)
    return fn


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method`."""
    get_method(name)
    del _REGISTRY[name]


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``; an unknown name raises MethodError listing the known ones."""
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise MethodError(f"unknown method {name!r}; known methods: {known}")
    return _REGISTRY[name]


def methods(family: str | None = None) -> list[MethodInfo]:
    """All registered methods (optionally of one family), in registration order."""
    _load_builtins()
    return [info for info in _REGISTRY.values() if family is None or info.family == family]


def _load_builtins() -> None:
    """Import the built-in method modules, which register themselves."""
    importlib.import_module("xai_widgets.methods")
