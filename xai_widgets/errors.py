"""The package's own exceptions: every bad input raises an ``XAIError`` that says what was wrong and what is accepted."""

from __future__ import annotations


class XAIError(ValueError):
    """Base class of every error xai_widgets raises on bad input or an unsupported model."""


class InputError(XAIError):
    """The image or batch is not usable: wrong shape, dtype, channel count, or non-finite values."""


class MethodError(XAIError):
    """An unknown method name, or options the method does not accept."""


class LayerError(XAIError):
    """An unknown layer, or a layer that cannot serve the requested method (e.g. no spatial output for a CAM)."""


class TargetError(XAIError):
    """A class index out of range, or a target of the wrong form."""


class UnsupportedModelError(XAIError):
    """The model contains a module or operation that a method cannot handle; the message names it."""


class Cancelled(XAIError):
    """A long computation was cancelled by its caller (e.g. a widget whose request was superseded)."""
