"""The method registry: names with metadata that feed ``explain`` and every widget's method menu."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MethodError

FAMILIES = ("gradient", "modified_backprop", "lrp", "cam", "backtrace", "attention", "custom")
COSTS = ("cheap", "moderate", "expensive")


@dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    ``fn(adapter, x, target, layer=None, **options)`` returns an Explanation or a tensor (N×C×H×W pixel map,
    or N×H×W / N×h×w map); ``x`` is a validated batch on the adapter's device and ``target`` a LongTensor of
    N indices or a callable on the logits. ``needs_layer`` methods get the layer's catalogue name.

    Capabilities, declared or read once from ``fn``'s signature at registration (``explain``, ``camanim``, the
    widgets and their jobs use these, never the method's name or signature):

    - ``batched``: handles a batch at once (False: ``explain`` runs it image by image);
    - ``cost``: cheap, moderate or expensive (menus show it);
    - ``options``: the option names ``fn`` accepts (None: any, it takes ``**options``);
    - ``takes_progress`` / ``takes_batch_size``: ``fn`` has a ``progress(done, total)`` callback (so a widget
      can show progress and cancel it) / a ``batch_size`` chunk option;
    - ``every_layer``: a layer method with a map at every spatial layer, so CAManim can film it (CAM needs a
      GAP + Linear head right after its layer; Guided Grad-CAM's layer map is Grad-CAM's);
    - ``multi_layer``: ``multi_layer(adapter, x, target, layers) -> ({layer: N×h×w map}, score)`` computes the
      raw maps at many layers in one pass (one forward and one backward for the gradient CAMs); without it
      CAManim runs the method layer by layer.
    """

    name: str
    fn: Callable[..., Any]
    family: str = "custom"
    needs_layer: bool = False
    cost: str = "cheap"
    batched: bool = True
    signed: bool = True
    description: str = ""
    options: frozenset[str] | None = None
    takes_progress: bool = False
    takes_batch_size: bool = False
    every_layer: bool = False
    multi_layer: Callable[..., Any] | None = None


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
    every_layer: bool | None = None,
    multi_layer: Callable[..., Any] | None = None,
    overwrite: bool = False,
) -> Any:
    """Add a method (also usable as a decorator). It then appears in ``explain`` and in every widget.

    The capabilities (see :class:`MethodInfo`) come from the arguments and from ``fn``'s signature: its
    parameters after ``(adapter, x, target)`` other than ``layer`` are its options. ``every_layer`` defaults to
    ``needs_layer``, so a registered CAM appears in the CAManim player and works in ``camanim``.

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
            every_layer=every_layer,
            multi_layer=multi_layer,
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
    if multi_layer is not None and not callable(multi_layer):
        raise MethodError(f"method {name!r}: multi_layer must be callable, got {type(multi_layer).__name__}")
    if (every_layer or multi_layer is not None) and not needs_layer:
        raise MethodError(
            f"method {name!r}: every_layer and multi_layer are for layer methods (needs_layer=True)"
        )
    options = accepted_options(fn)
    _REGISTRY[name] = MethodInfo(
        name,
        fn,
        family=family,
        needs_layer=needs_layer,
        cost=cost,
        batched=batched,
        signed=signed,
        description=description or (fn.__doc__ or "").strip().split("\n")[0],
        options=options,
        takes_progress=options is not None and "progress" in options,
        takes_batch_size=options is not None and "batch_size" in options,
        every_layer=needs_layer if every_layer is None else bool(every_layer),
        multi_layer=multi_layer,
    )
    return fn


def accepted_options(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The option names a method function takes: its parameters after ``(adapter, x, target)``, without
    ``layer``; None when it takes ``**options`` (or its signature cannot be read), i.e. any option."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    skipped = {p.name for p in positional[:3]} | {"layer"}
    return frozenset(p.name for p in parameters if p.kind is not p.VAR_POSITIONAL and p.name not in skipped)


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


def method_specs(
    methods: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None],
) -> dict[str, dict[str, Any]]:
    """Methods as ``{name: options}`` from a name, a list of names or a mapping; every name must be registered
    (options may hold ``layer`` for CAM methods)."""
    if isinstance(methods, str):
        methods = [methods]
    specs = (
        {name: dict(options or {}) for name, options in methods.items()}
        if isinstance(methods, Mapping)
        else {name: {} for name in methods}
    )
    if not specs:
        raise MethodError("give at least one method")
    for name in specs:
        get_method(name)
    return specs
