"""Locate the widgets' ESM sources: ``js/`` in a checkout, ``xai_widgets/static/`` in a wheel.

The wheel force-includes the repository's ``js/`` folder as ``xai_widgets/static/`` (see pyproject.toml), so
an installed package finds its modules next to itself; an editable install or a source checkout reads
``js/`` beside the package directory. Either way the file is read once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def asset_path(name: str) -> Path:
    """The path of the ESM module ``name`` (e.g. ``"heatmap.js"``); FileNotFoundError names where it looked."""
    candidates = (_PACKAGE / "static" / name, _PACKAGE.parent / "js" / name)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"widget module {name!r} not found; looked in {tried}")


@functools.cache
def esm(name: str) -> str:
    """The source text of the ESM module ``name`` for an anywidget's ``_esm``, with the shared helpers of
    ``common.js`` in front (anywidget loads one module text per widget)."""
    common = asset_path("common.js").read_text(encoding="utf-8")
    return common + "\n" + asset_path(name).read_text(encoding="utf-8")
