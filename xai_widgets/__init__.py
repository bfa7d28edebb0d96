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
# attribute (import submodules as ``from xai_widgets.methods import cam``).
from .registry import MethodInfo, get_method, methods, register_method, unregister_method

__version__ = "0.1.0"

__all__ = [
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
