"""Built-in methods; importing this package registers them (one module per family)."""

from . import attention, backtrace, cam, gradient, lrp, modified_backprop  # noqa: F401
