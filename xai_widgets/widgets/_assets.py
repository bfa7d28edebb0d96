"""Locate the widgets' built front ends: ``xai_widgets/static/<name>.js`` and ``<name>.css``.

esbuild bundles each entry ``js/widgets/<name>.js`` of the repository (with the helpers of ``js/lib/`` it
imports and the CSS it imports) into one ES module and one stylesheet in ``xai_widgets/static/`` (``make js``;
the wheel and the sdist carry the built files, so an installed package never needs Node). A widget class sets
``_esm = asset("<name>.js")`` and ``_css = asset("<name>.css")``: anywidget reads a :class:`~pathlib.Path`
itself and, with ``ANYWIDGET_HMR=1`` in a source checkout, reloads open views when ``npm run dev`` rebuilds.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"


def asset(name: str) -> Path:
    """The path of the built file ``name`` (e.g. ``"heatmap.js"``); FileNotFoundError says how to build it."""
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(
            f"widget front end {name!r} is not built: {path} is missing. In a source checkout run `make js` "
            "(needs Node.js >= 20 and npm; it runs `npm ci && npm run build` in js/), or install the package "
            "with pip, whose wheel carries the built files."
        )
    return path
