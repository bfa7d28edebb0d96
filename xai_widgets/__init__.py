"""xai_widgets: Jupyter widgets and a batched engine that explain PyTorch vision models."""

from . import methods as _builtin_methods  # noqa: F401  (registers the built-in methods; see below)
from .errors import (
    Cancelled,
    InputError,
    LayerError,
    MethodError,
    TargetError,
    UnsupportedModelError,
    XAIError,
)
from .explain import explain
from .explanation import Explanation
from .model import LayerInfo, ModelAdapter, as_adapter

# ``methods`` is the registry listing; it deliberately shadows the ``xai_widgets.methods`` subpackage
# attribute (import submodules as ``from xai_widgets.methods import cam``); ``explain`` likewise. That is stable
# because both modules are imported above, before the functions are bound: Python sets a package attribute only
# when the submodule first loads. A lazily exported name (``_LAZY``) must never equal a submodule (the CAManim
# engine is ``xai_widgets.all_layers``); tests/test_readme.py checks every name in __all__ after importing all.
from .registry import MethodInfo, get_method, methods, register_method, unregister_method

__version__ = "0.1.0"

# Engine modules and widgets load on first use: ``import xai_widgets`` stays fast (no ipywidgets, bqplot).
_LAZY = {
    "camanim": ("xai_widgets.all_layers", "camanim"),
    "CAManimResult": ("xai_widgets.all_layers", "CAManimResult"),
    "LayerROAD": ("xai_widgets.all_layers", "LayerROAD"),
    "road": ("xai_widgets.metrics.road", "road"),
    "ybroad": ("xai_widgets.metrics.road", "ybroad"),
    "load_image": ("xai_widgets.images", "load_image"),
    "AttributionExplorer": ("xai_widgets.widgets", "AttributionExplorer"),
    "HeatmapView": ("xai_widgets.widgets", "HeatmapView"),
    "ExplanationState": ("xai_widgets.widgets", "ExplanationState"),
    "CAManimPlayer": ("xai_widgets.widgets.camanim_player", "CAManimPlayer"),
    "SanityToggle": ("xai_widgets.widgets.sanity_toggle", "SanityToggle"),
    "InteractionBars": ("xai_widgets.widgets.interaction_bars", "InteractionBars"),
    "maximize": ("xai_widgets.activation_max", "maximize"),
    "ActivationMaximizer": ("xai_widgets.widgets.maximizer", "ActivationMaximizer"),
    "Workbench": ("xai_widgets.widgets.workbench", "Workbench"),
    "evaluate": ("xai_widgets.evaluation", "evaluate"),
    "Evaluation": ("xai_widgets.evaluation", "Evaluation"),
    "EvaluationBoard": ("xai_widgets.widgets.evaluation_board", "EvaluationBoard"),
}
_SUBMODULES = ("actspec", "data", "metrics", "sanity", "zoo", "widgets", "images", "export")


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _SUBMODULES:
        return importlib.import_module(f"xai_widgets.{name}")
    raise AttributeError(f"module 'xai_widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "AttributionExplorer",
    "CAManimPlayer",
    "CAManimResult",
    "HeatmapView",
    "InteractionBars",
    "ActivationMaximizer",
    "maximize",
    "Workbench",
    "evaluate",
    "Evaluation",
    "EvaluationBoard",
    "SanityToggle",
    "camanim",
    "load_image",
    "Cancelled",
    "Explanation",
    "InputError",
    "LayerError",
    "LayerInfo",
    "MethodError",
    "MethodInfo",
    "ModelAdapter",
    "TargetError",
    "UnsupportedModelError",
    "XAIError",
    "as_adapter",
    "explain",
    "get_method",
    "methods",
    "register_method",
    "unregister_method",
]
