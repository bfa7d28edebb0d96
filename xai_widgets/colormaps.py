"""The colormaps shared by the heatmap view, the CAManim player and the video export.

Each is a kind (``diverging``: white at the centre, value 0; ``sequential``: low to high |value|) and evenly
spaced control points; the 256-entry uint8 tables are interpolated from them, so the browser, ``to_png`` and
exported frames use the same colours.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

COLORMAPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "RdBu": (
        "diverging",
        (
            "#053061",
            "#2166ac",
            "#4393c3",
            "#92c5de",
            "#d1e5f0",
            "#f7f7f7",
            "#fddbc7",
            "#f4a582",
            "#d6604d",
            "#b2182b",
            "#67001f",
        ),
    ),
    "bwr": ("diverging", ("#0000ff", "#ffffff", "#ff0000")),
    "inferno": (
        "sequential",
        (
            "#000004",
            "#1b0c41",
            "#4a0c6b",
            "#781c6d",
            "#a52c60",
            "#cf4446",
            "#ed6925",
            "#fb9b06",
            "#f7d13d",
            "#fcffa4",
        ),
    ),
    "viridis": (
        "sequential",
        ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"),
    ),
    "jet": (
        "sequential",
        ("#000080", "#0000ff", "#0080ff", "#00ffff", "#80ff80", "#ffff00", "#ff8000", "#ff0000", "#800000"),
    ),
    "gray": ("sequential", ("#000000", "#ffffff")),
}
DEFAULT_DIVERGING = "RdBu"
DEFAULT_SEQUENTIAL = "inferno"
SEQUENTIAL = [name for name, (kind, _) in COLORMAPS.items() if kind == "sequential"]


def colormap_table(name: str) -> np.ndarray:
    """The 256×3 uint8 table of colormap ``name``: linear interpolation between its control points."""
    if name not in COLORMAPS:
        raise InputError(f"unknown colormap {name!r}; available: auto, {', '.join(COLORMAPS)}")
    points = np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in COLORMAPS[name][1]], dtype=np.float64
    )
    position = np.linspace(0.0, 1.0, len(points))
    grid = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(grid, position, points[:, k]) for k in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


def resolve_colormap(colormap: str, signed: bool) -> str:
    """``auto`` picks the diverging map for signed values and the sequential one otherwise."""
    if colormap == "auto":
        return DEFAULT_DIVERGING if signed else DEFAULT_SEQUENTIAL
    colormap_table(colormap)
    return colormap
