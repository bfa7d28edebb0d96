"""Views for feature-vector explanations and for DLBacktrace's bookkeeping (bqplot charts).

- :class:`FeatureBars`: signed horizontal bars of one sample's per-feature relevance, largest |value| on top,
  labelled with the feature names; the explorer uses it in place of the heatmaps when the model takes vectors.
- :class:`RelevanceFlow`: DLBacktrace's ledger as a chart, one stacked bar per node from the input to the output:
  the relevance it passed on and the share it absorbed (bias, saturation), so conservation can be seen.
- :class:`ContrastivePair`: the two streams of ``backtrace_contrastive`` (towards the target, towards the other
  classes) and their difference side by side, as bars for vectors or heatmaps for pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bqplot
import ipywidgets as w
import numpy as np
from torch import Tensor

from ..errors import InputError
from ..explanation import Explanation
from .heatmap import HeatmapView
from .jobs import error_html

POSITIVE, NEGATIVE = "#d55e00", "#0072b2"  # Okabe–Ito vermillion (for the class) and blue (against)
PASSED, ABSORBED = "#0072b2", "#e69f00"


def ranked(
    values: Any, names: Sequence[str] | None = None, top: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Feature names and values sorted by |value|, largest first, at most ``top`` of them."""
    array = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=float).reshape(
        -1
    )
    if names is None:
        names = [f"feature {i}" for i in range(array.size)]
    if len(names) != array.size:
        raise InputError(f"{len(names)} feature names for {array.size} values")
    order = np.argsort(-np.abs(array), kind="stable")[: top or array.size]
    return [str(names[i]) for i in order], array[order]


class FeatureBars(w.VBox):
    """Signed horizontal bars of per-feature relevance: red pushes towards the explained class, blue against.

    Args:
        feature_names: the D feature names (default: ``feature 0``, …).
        title: shown above the chart.
        top: how many features to show (largest |relevance| first; default 15).
        width, height: chart size in pixels (height default: 22 px per bar).

    ``update(error=, status=, progress=, title=)`` takes the same display settings as a HeatmapView, so the
    explorer drives both alike; :meth:`show` draws an Explanation (one row of an N×D attribution).
    """

    def __init__(
        self,
        feature_names: Sequence[str] | None = None,
        title: str = "",
        top: int = 15,
        width: int = 420,
        height: int | None = None,
    ) -> None:
        self.feature_names = None if feature_names is None else [str(n) for n in feature_names]
        self.top = max(1, int(top))
        self.x_scale = bqplot.OrdinalScale(reverse=True)
        self.y_scale = bqplot.LinearScale()
        self.bars = bqplot.Bars(
            x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale}, orientation="horizontal",
            colors=[POSITIVE], tooltip=bqplot.Tooltip(fields=["x", "y"], formats=["", ".3~g"]),
        )  # fmt: skip
        axes = [
            bqplot.Axis(scale=self.x_scale, side="left", tick_style={"font-size": "10px"}),
            bqplot.Axis(scale=self.y_scale, side="bottom", tick_format=".2~g", label="relevance"),
        ]  # fmt: skip
        rows = height or 40 + 22 * self.top
        self.figure = bqplot.Figure(
            marks=[self.bars], axes=axes,
            fig_margin={"top": 10, "bottom": 40, "left": 170, "right": 15},
            layout=w.Layout(width=f"{int(width)}px", height=f"{int(rows)}px"),
        )  # fmt: skip
        self.figure.add_class("xai-feature-bars")
        self.title = w.HTML()
        self.status = w.HTML()
        self.error = w.HTML()
        self.progress = w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="200px", visibility="hidden"))
        super().__init__([self.title, self.figure, w.HBox([self.progress, self.status]), self.error])
        self.update(title=title)

    def update(self, **settings: Any) -> None:
        """Set ``title``, ``status``, ``error`` and/or ``progress`` (a fraction, or None to hide it)."""
        for name, value in settings.items():
            if name == "title":
                self.title.value = f"<b>{value}</b>" if value else ""
            elif name == "status":
                self.status.value = str(value or "")
            elif name == "error":
                self.error.value = error_html(str(value or ""))
            elif name == "progress":
                self.progress.layout.visibility = "hidden" if value is None else "visible"
                self.progress.value = 0.0 if value is None else float(value)
            else:
                raise InputError(f"FeatureBars has no display setting {name!r}")

    def show_values(self, values: Any, title: str | None = None) -> None:
        """Draw one relevance value per feature."""
        names, array = ranked(values, self.feature_names, self.top)
        with self.figure.hold_sync():
            self.bars.x, self.bars.y = names, array
            self.bars.colors = [POSITIVE if v >= 0 else NEGATIVE for v in array]
            bound = float(np.abs(array).max()) if array.size else 1.0
            self.y_scale.min, self.y_scale.max = -bound or -1.0, bound or 1.0
        if title is not None:
            self.update(title=title)

    def show(self, explanation: Explanation, index: int = 0, title: str | None = None) -> None:
        """Draw row ``index`` of an Explanation of feature vectors (its attribution must be N×D)."""
        attribution = explanation.attribution
        if attribution.ndim != 2:
            raise InputError(
                f"FeatureBars shows N×D feature relevance; this {explanation.method} map has shape "
                f"{tuple(attribution.shape)} (use a HeatmapView for pictures)"
            )
        self.show_values(attribution[index], explanation.method if title is None else title)
        self.update(error="")


class RelevanceFlow(w.VBox):
    """DLBacktrace's ledger as stacked bars per node (input → output): relevance passed on and absorbed.

    ``show(explanation, stream="positive")`` reads ``extras['ledger']`` (``"negative"``: the contrastive
    mode's other stream, ``extras['ledger_negative']``) for sample ``index``.
    """

    def __init__(self, width: int = 640, height: int = 300) -> None:
        self.x_scale, self.y_scale = bqplot.OrdinalScale(), bqplot.LinearScale(min=0.0)
        self.bars = bqplot.Bars(
            x=[], y=[[], []], scales={"x": self.x_scale, "y": self.y_scale}, type="stacked",
            colors=[PASSED, ABSORBED], labels=["passed on", "absorbed (bias, saturation)"], display_legend=True,
            tooltip=bqplot.Tooltip(fields=["x", "y"], formats=["", ".4~g"]),
        )  # fmt: skip
        axes = [
            bqplot.Axis(scale=self.x_scale, tick_rotate=-40, tick_style={"font-size": "9px"}),
            bqplot.Axis(scale=self.y_scale, side="left", tick_format=".3~g", label="relevance"),
        ]  # fmt: skip
        self.figure = bqplot.Figure(
            marks=[self.bars], axes=axes, title="relevance per node (input → output)",
            legend_location="top-left",
            fig_margin={"top": 40, "bottom": 90, "left": 55, "right": 10},
            layout=w.Layout(width=f"{int(width)}px", height=f"{int(height)}px"),
        )  # fmt: skip
        self.figure.add_class("xai-relevance-flow")
        self.summary = w.HTML()
        self.error = w.HTML()
        super().__init__([self.figure, self.summary, self.error])

    def show(self, explanation: Explanation, index: int = 0, stream: str = "positive") -> None:
        key = {"positive": "ledger", "negative": "ledger_negative"}.get(stream)
        ledger = explanation.extras.get(key) if key else None
        if not ledger:
            self.error.value = error_html(
                f"no {stream} relevance ledger in this {explanation.method} explanation (backtrace methods have "
                "one; stream is 'positive' or 'negative')"
            )
            return
        names = list(ledger)
        passed = np.array([float(ledger[n]["passed"][index]) for n in names])
        absorbed = np.array([float(ledger[n]["absorbed"][index]) for n in names])
        with self.figure.hold_sync():
            self.bars.x = names
            self.bars.y = np.stack([passed, np.clip(absorbed, 0.0, None)])
        suffix = "" if stream == "positive" else "_negative"
        start = float(explanation.extras[f"output_relevance{suffix}"][index])
        reached = float(explanation.extras[f"input_relevance{suffix}"][index])
        kept = float(explanation.extras[f"bias_absorbed{suffix}"][index])
        self.summary.value = (
            f"start relevance {start:.4g} → input {reached:.4g} + absorbed {kept:.4g} "
            f"(difference {start - reached - kept:.2g})"
        )
        self.error.value = ""


class ContrastivePair(w.HBox):
    """``backtrace_contrastive``'s two streams and their difference side by side.

    Feature vectors (``feature_names`` given or an N×D map) get three :class:`FeatureBars`; pictures get three
    HeatmapViews (pass ``image``, H×W×3 uint8 or C×H×W in [0, 1], to draw the maps over it).
    """

    TITLES = ("towards the target (R⁺)", "towards the other classes (R⁻)", "difference R⁺ − R⁻")

    def __init__(self, feature_names: Sequence[str] | None = None, size: int = 224, top: int = 12) -> None:
        self.feature_names, self.size, self.top = feature_names, int(size), top
        self.views: list[Any] = []
        self.error = w.HTML()
        super().__init__([])

    def show(self, explanation: Explanation, index: int = 0, image: Any = None) -> None:
        extras = explanation.extras
        if "positive" not in extras or "negative" not in extras:
            self.children = [self.error]
            self.error.value = error_html(
                f"{explanation.method} has no contrastive streams; use 'backtrace_contrastive'"
            )
            return
        maps = (extras["positive"][index], extras["negative"][index], explanation.attribution[index])
        vectors = maps[0].ndim == 1
        if not self.views or isinstance(self.views[0], FeatureBars) != vectors:
            if vectors:
                self.views = [FeatureBars(self.feature_names, top=self.top, width=360) for _ in maps]
            else:
                self.views = [HeatmapView(size=self.size) for _ in maps]
        for view, values, title in zip(self.views, maps, self.TITLES):
            if vectors:
                view.show_values(values, title)
            else:
                view.update(image=image, map=values, signed=bool((values < 0).any()), title=title)
        self.children = self.views
