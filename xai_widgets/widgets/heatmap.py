"""HeatmapView: an image with an attribution map overlaid, drawn on a canvas in the browser.

The picture (H×W×3 uint8) and the map (h×w float16, scaled to [-1, 1] by ``values_scale``) travel once as
binary buffers. Colormap, opacity, clipping, smoothing and the value readout under the mouse are applied in
the browser (``js/widgets/heatmap.js``): moving the view's own controls sends nothing to the kernel. Python sets the
initial display choices through the same-named traits and can change them later.

The colormap tables (``xai_widgets.colormaps``) are sent with the widget, so the browser and :meth:`HeatmapView.to_png`
use the same colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets as t
from PIL import Image

from ..colormaps import COLORMAPS, colormap_table, resolve_colormap
from ..errors import InputError
from ..images import read_picture, to_uint8
from ._assets import asset

CLIP_MODES = ("symmetric", "percentile")
SMOOTHING = ("bilinear", "nearest")


def as_picture(image: Any) -> np.ndarray:
    """The H×W×3 uint8 picture a view displays, from anything :func:`xai_widgets.images.read_picture` reads
    (path, gallery name, file bytes, PIL image, array, tensor): the engine's reader, so alpha is composited over
    white and grey repeated to RGB exactly as the model input is made; the size is kept."""
    return to_uint8(read_picture(image))


def as_map(values: Any) -> np.ndarray:
    """A finite h×w float32 array from an array or tensor (h×w or 1×h×w)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or 0 in array.shape:
        raise InputError(f"a map must be h×w (or 1×h×w), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError("the map contains NaN or infinite values")
    return array


def encode_map(values: np.ndarray) -> tuple[bytes, float]:
    """The map as little-endian float16 bytes of ``values / scale`` (so in [-1, 1]) and the scale.

    Dividing by max|v| first keeps tiny gradients (1e-6) representable in float16.
    """
    scale = float(np.abs(values).max())
    scale = scale if scale > 0 else 1.0
    return (values / scale).astype("<f2").tobytes(), scale


def clip_value(magnitudes: np.ndarray, clip: str, percentile: float) -> float:
    """The value mapped to the ends of the colormap: max |v| (symmetric) or a percentile of |v|.

    Percentiles interpolate linearly between order statistics, as ``numpy.percentile`` and the browser do.
    """
    if clip == "symmetric":
        limit = float(magnitudes.max())
    elif clip == "percentile":
        limit = float(np.percentile(magnitudes, percentile))
    else:
        raise InputError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}")
    return limit if limit > 0 else 1.0


class HeatmapView(anywidget.AnyWidget):
    """An image with a signed or positive map overlaid; display choices are made in the browser.

    Args:
        image: the picture (see :func:`as_picture`), or None for the map alone.
        map: the h×w map (any resolution; it is scaled to the picture), or None.
        title: text above the picture.
        colormap: ``auto`` (diverging for signed maps, sequential otherwise) or a name from ``COLORMAPS``.
        opacity: weight of the map over the picture, in [0, 1].
        clip: ``symmetric`` (colour range ±max|v|) or ``percentile`` (±the ``percentile``-th percentile of |v|).
        smoothing: ``bilinear`` or ``nearest`` scaling to the display ``size`` (width in CSS pixels).
        signed: force the signed/positive reading of the map (default: signed when it has a negative value).

    Diverging colormaps show v / limit centred at zero; sequential colormaps show |v| / limit.
    ``error`` shows a message in the view, ``status``/``progress`` a line and a bar for long work.

    Example:
        >>> view = HeatmapView(np.zeros((8, 8, 3), np.uint8), np.eye(8) - 0.5, title="saliency")
        >>> view.values_shape
        [8, 8]
    """

    _esm = asset("heatmap.js")
    _css = asset("heatmap.css")

    image = t.Bytes(b"").tag(sync=True)
    image_shape = t.List(t.Int(), default_value=[0, 0]).tag(sync=True)
    values = t.Bytes(b"").tag(sync=True)
    values_shape = t.List(t.Int(), default_value=[0, 0]).tag(sync=True)
    values_scale = t.Float(1.0).tag(sync=True)
    signed = t.Bool(True).tag(sync=True)

    title = t.Unicode("").tag(sync=True)
    colormap = t.Unicode("auto").tag(sync=True)
    opacity = t.Float(0.6, min=0.0, max=1.0).tag(sync=True)
    clip = t.Enum(CLIP_MODES, default_value="percentile").tag(sync=True)
    percentile = t.Float(99.5, min=50.0, max=100.0).tag(sync=True)
    smoothing = t.Enum(SMOOTHING, default_value="bilinear").tag(sync=True)
    size = t.Int(224, min=16).tag(sync=True)
    show_controls = t.Bool(True).tag(sync=True)

    error = t.Unicode("").tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    progress = t.Float(None, allow_none=True).tag(sync=True)

    _colormap_names = t.List(t.Unicode()).tag(sync=True)
    _colormap_kinds = t.List(t.Unicode()).tag(sync=True)
    _colormap_tables = t.Bytes(b"").tag(sync=True)

    def __init__(
        self,
        image: Any = None,
        map: Any = None,
        *,
        title: str = "",
        signed: bool | None = None,
        **kwargs: Any,
    ) -> None:
        names = list(COLORMAPS)
        kwargs.setdefault("_colormap_names", names)
        kwargs.setdefault("_colormap_kinds", [COLORMAPS[n][0] for n in names])
        kwargs.setdefault("_colormap_tables", np.concatenate([colormap_table(n) for n in names]).tobytes())
        super().__init__(title=title, **kwargs)
        self.update(image=image, map=map, signed=signed)

    @t.validate("colormap")
    def _valid_colormap(self, proposal: dict) -> str:
        if proposal["value"] != "auto":
            colormap_table(proposal["value"])
        return proposal["value"]

    def update(
        self,
        *,
        image: Any = None,
        map: Any = None,
        signed: bool | None = None,
        **traits: Any,
    ) -> None:
        """Set the picture and/or map and any traits (``title``, ``error``, …) in one message to the browser."""
        with self.hold_sync():
            if image is not None:
                picture = as_picture(image)
                self.image_shape = list(picture.shape[:2])
                self.image = picture.tobytes()
            if map is not None:
                array = as_map(map)
                data, scale = encode_map(array)
                self.values_shape = list(array.shape)
                self.values_scale = scale
                self.values = data
                self.signed = bool(array.min() < 0) if signed is None else bool(signed)
            elif signed is not None:
                self.signed = bool(signed)
            for name, value in traits.items():
                if not self.has_trait(name) or name.startswith("_"):
                    raise InputError(f"HeatmapView has no display setting {name!r}")
                setattr(self, name, value)

    def clear_map(self) -> None:
        """Remove the map (the picture stays)."""
        with self.hold_sync():
            self.values_shape = [0, 0]
            self.values = b""

    # ----------------------------------------------------------------- reading back
    @property
    def picture(self) -> np.ndarray | None:
        """The H×W×3 uint8 picture as sent to the browser (None when there is none)."""
        height, width = self.image_shape
        if not self.image or height * width == 0:
            return None
        return np.frombuffer(self.image, dtype=np.uint8).reshape(height, width, 3)

    @property
    def map(self) -> np.ndarray | None:
        """The h×w map as the browser sees it (float16 precision, original scale); None when there is none."""
        height, width = self.values_shape
        if not self.values or height * width == 0:
            return None
        return (
            np.frombuffer(self.values, dtype="<f2").astype(np.float32).reshape(height, width)
            * self.values_scale
        )

    def colors(self) -> np.ndarray:
        """The map coloured with the current colormap and clipping: h×w×3 uint8 at the map's resolution."""
        values = self.map
        if values is None:
            raise InputError("the view has no map to colour")
        name = resolve_colormap(self.colormap, self.signed)
        limit = clip_value(np.abs(values), self.clip, self.percentile)
        if COLORMAPS[name][0] == "diverging":
            position = 0.5 + 0.5 * np.clip(values / limit, -1.0, 1.0)
        else:
            position = np.clip(np.abs(values) / limit, 0.0, 1.0)
        return colormap_table(name)[np.round(position * 255.0).astype(np.intp)]

    def composite(self) -> np.ndarray:
        """The overlay as the browser draws it, at the picture's resolution: H×W×3 uint8.

        The coloured map is resized to the picture with the view's ``smoothing``, then blended as
        ``(1 - opacity) · picture + opacity · colour``. Without a picture the colours are returned alone.
        """
        picture = self.picture
        if self.map is None:
            if picture is None:
                raise InputError("the view has neither a picture nor a map")
            return picture.copy()
        colors = self.colors()
        if picture is None:
            return colors
        height, width = picture.shape[:2]
        if colors.shape[:2] != (height, width):
            resample = Image.Resampling.NEAREST if self.smoothing == "nearest" else Image.Resampling.BILINEAR
            colors = np.asarray(Image.fromarray(colors).resize((width, height), resample))
        blend = (1.0 - self.opacity) * picture.astype(np.float64) + self.opacity * colors.astype(np.float64)
        return np.round(blend).astype(np.uint8)

    def to_png(self, path: str | Path | None = None, size: int | Sequence[int] | None = None) -> Image.Image:
        """The overlay (see :meth:`composite`) as a PIL image, saved as PNG to ``path`` when given.

        ``size`` resizes the result (an int is the width, keeping the aspect ratio) with the view's smoothing.
        """
        result = Image.fromarray(self.composite())
        if size is not None:
            width, height = (
                (size, round(size * result.height / result.width)) if isinstance(size, int) else size
            )
            resample = Image.Resampling.NEAREST if self.smoothing == "nearest" else Image.Resampling.BILINEAR
            result = result.resize((int(width), int(height)), resample)
        if path is not None:
            result.save(path, format="PNG")
        return result
