"""Built-in methods; importing this package registers them (one module per family)."""

from . import gradient  # noqa: F401
