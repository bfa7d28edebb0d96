"""CAManimPlayer: every layer's CAM as a film with a timeline scrubber, and ybROAD per layer below it.

The whole stack (layers × H × W, uint8, normalised local or global) travels to the browser ONCE as one binary
buffer; playing, stepping and dragging the scrubber run in the browser (``js/widgets/camanim_player.js``), colouring
each frame with the heatmap view's colormap tables, so scrubbing sends no kernel message per frame (the
position is synced back once the scrubber rests). Below, a bqplot line shows the ybROAD score of each layer,
the best layer marked; its cursor follows the scrubber in the browser (the player's front end moves the
cursor mark's model directly), and clicking a point of the curve moves the scrubber there.

Controls for the method, the target and the normalisation recompute in a background
:class:`~xai_widgets.widgets.jobs.JobRunner` (cached; the latest request wins; progress and errors shown).
Given an explorer's :class:`~xai_widgets.widgets.state.ExplanationState`, the player follows its picture and
target.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import anywidget
import bqplot
import ipywidgets as w
import numpy as np
import traitlets as t
from torch import nn

from ..all_layers import DEFAULT_KINDS, CAManimResult, LayerROAD, camanim, film_methods
from ..colormaps import SEQUENTIAL, colormap_table
from ..errors import InputError
from ..metrics.road import ybroad
from ..model import ModelAdapter
from ._assets import asset
from .explorer import load_model
from .heatmap import as_picture
from .jobs import JobRunner, describe_error, error_html
from .state import ExplanationState

NORMALIZATIONS = ("global", "local")
PREDICTED = -1  # the target menu's entry for "the predicted class" (None in the state)
AUTO_ROAD_LAYERS = 24
"""With ``road="auto"`` a film of at most this many layers is scored at once; a deeper one on request."""
FAINT = 0.05
"""Under global normalisation, a frame whose peak is below this share of the film's shows a hint."""


def road_layers(count: int, sample: int | None) -> list[int]:
    """The layers ybROAD scores: all of ``count``, or ``sample`` evenly spaced ones (first and last included)."""
    if sample is None or count <= sample:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, max(2, sample)).round()})


def integer_ticks(count: int, most: int = 12) -> list[int]:
    """Tick positions 0..count−1 at a whole step, at most about ``most`` of them."""
    step = max(1, -(-count // most))
    return list(range(0, max(count, 1), step))


def frame_captions(film: CAManimResult, normalization: str) -> list[str]:
    """Kind and resolution of each layer; under global normalisation a faint frame says why it is blank."""
    captions = [f"{k}, {h}×{w}" for k, (h, w) in zip(film.kinds, film.resolutions)]
    if normalization != "global" or not len(film):
        return captions
    peaks = film.frames("global").flatten(1).amax(1).float() / 255.0
    return [
        caption
        + (
            f"; faint under global normalisation (peak {peak:.0%} of the film's): try local"
            if peak < FAINT
            else ""
        )
        for caption, peak in zip(captions, peaks.tolist())
    ]


class CAManimView(anywidget.AnyWidget):
    """The browser part of the player: the film on a canvas and its timeline (play/pause, step, speed, drag).

    ``frames`` holds all L×H×W uint8 frames at once; ``index`` is the shown layer (set from Python to jump,
    synced back from the browser once the scrubber rests); ``playing`` and ``fps`` drive the playback.
    ``_road_cursor`` and ``_road_points`` are the bqplot marks the front end moves and listens to.
    """

    _esm = asset("camanim_player.js")
    _css = asset("camanim_player.css")

    frames = t.Bytes(b"").tag(sync=True)
    frames_shape = t.List(t.Int(), default_value=[0, 0, 0]).tag(sync=True)
    image = t.Bytes(b"").tag(sync=True)
    image_shape = t.List(t.Int(), default_value=[0, 0]).tag(sync=True)
    names = t.List(t.Unicode()).tag(sync=True)
    captions = t.List(t.Unicode()).tag(sync=True)
    index = t.Int(0, min=0).tag(sync=True)
    best = t.Int(-1).tag(sync=True)
    playing = t.Bool(False).tag(sync=True)
    fps = t.Float(4.0, min=0.25, max=60.0).tag(sync=True)

    title = t.Unicode("").tag(sync=True)
    colormap = t.Unicode("inferno").tag(sync=True)
    opacity = t.Float(0.6, min=0.0, max=1.0).tag(sync=True)
    size = t.Int(256, min=16).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    progress = t.Float(None, allow_none=True).tag(sync=True)

    _colormap_names = t.List(t.Unicode()).tag(sync=True)
    _colormap_tables = t.Bytes(b"").tag(sync=True)
    _road_cursor = t.Instance(bqplot.Lines, allow_none=True).tag(sync=True, **w.widget_serialization)
    _road_points = t.Instance(bqplot.Scatter, allow_none=True).tag(sync=True, **w.widget_serialization)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("_colormap_names", SEQUENTIAL)
        kwargs.setdefault(
            "_colormap_tables", np.concatenate([colormap_table(n) for n in SEQUENTIAL]).tobytes()
        )
        super().__init__(**kwargs)

    @t.validate("colormap")
    def _valid_colormap(self, proposal: dict) -> str:
        if proposal["value"] not in SEQUENTIAL:
            raise InputError(f"the film uses a sequential colormap: one of {', '.join(SEQUENTIAL)}")
        return proposal["value"]

    def show(self, film: CAManimResult, normalization: str, picture: np.ndarray) -> None:
        """Send the whole film (one buffer) with its picture, layer names and captions."""
        frames = film.frames(normalization).numpy()
        with self.hold_sync():
            self.frames_shape = list(frames.shape)
            self.frames = frames.tobytes()
            self.image_shape = list(picture.shape[:2])
            self.image = picture.tobytes()
            self.names = list(film.names)
            self.captions = frame_captions(film, normalization)
            self.index = min(self.index, len(film) - 1)
            self.best = -1


class CAManimPlayer(w.VBox):
    """A CAM at every layer of a model for one image, played as a film, with ybROAD per layer.

    Args:
        model: an ``nn.Module`` classifier, a ModelAdapter or a zoo name (``"shapes-resnet"``).
        image: the picture (path, PIL image, H×W×C array, C×H×W tensor in [0, 1]); None to use ``state``'s.
        target: class index, or None for the predicted class.
        method: a CAM method: any registered method with a map at every layer (``film_methods()``, user CAMs
            included; single pass for the gradient CAMs; see :func:`xai_widgets.camanim`).
        normalization: ``global`` (one scale for all layers, from the raw maps) or ``local`` (per layer).
        kinds: layer kinds of the film (conv and block outputs by default).
        road: ybROAD per layer: ``"auto"`` (after the film when it has at most ``AUTO_ROAD_LAYERS`` layers,
            else on the "score layers" button), True (always after the film) or False (on the button only).
            Scoring can be cancelled (the cancel button).
        road_sample: score at most this many evenly spaced layers (first and last included; None: all), so a
            deep model (DenseNet-121: 120 layers) gets its ybROAD curve in a fifth of the time, cancellable.
        percentiles: ROAD percentiles.
        fps: playback speed in layers per second.
        size: display width of the film in pixels.
        state: an explorer's ExplanationState to follow (picture, target and the sanity check's weight
            randomization: the film and its scores are then those of the randomized model), instead of
            ``image``/``target``.
        runner: a JobRunner to share (default: a new one); ``background=False`` computes inside each call.

    Example:
        >>> player = CAManimPlayer("shapes-resnet", picture)  # doctest: +SKIP
        >>> player.wait(); player.scores.best_layer()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter | str,
        image: Any = None,
        *,
        target: int | None = None,
        method: str = "gradcam",
        normalization: str = "global",
        kinds: Iterable[str] = DEFAULT_KINDS,
        road: bool | str = "auto",
        road_sample: int | None = AUTO_ROAD_LAYERS,
        percentiles: Sequence[float] = (20, 40, 60, 80),
        fps: float = 4.0,
        size: int = 256,
        state: ExplanationState | None = None,
        runner: JobRunner | None = None,
        background: bool = True,
    ) -> None:
        films = [info.name for info in film_methods()]
        if method not in films:
            raise InputError(f"unknown CAManim method {method!r}; use one of {', '.join(films)}")
        if normalization not in NORMALIZATIONS:
            raise InputError(f"normalization must be 'global' or 'local', got {normalization!r}")
        self.adapter = load_model(model) if state is None else state.adapter
        self.state = state if state is not None else ExplanationState(self.adapter, target=target)
        self.runner = runner if runner is not None else JobRunner(background=background)
        self.kinds = tuple(kinds)
        if road not in (True, False, "auto"):
            raise InputError(f"road must be True, False or 'auto', got {road!r}")
        if road_sample is not None and (isinstance(road_sample, bool) or int(road_sample) < 2):
            raise InputError(f"road_sample must be None or at least 2, got {road_sample!r}")
        self.road = road
        self.road_sample = None if road_sample is None else int(road_sample)
        self.road_indices: list[int] = []
        self._road_key: tuple | None = None
        self._params: Any = None  # the substituted parameters the shown film was computed with
        self.percentiles = tuple(float(p) for p in percentiles)
        self.film: CAManimResult | None = None
        self.scores: LayerROAD | None = None

        self.method_select = w.Dropdown(
            description="method",
            options=[(f"{info.name} ({info.cost})", info.name) for info in film_methods()],
            value=method,
        )
        classes = [(self._class_name(i), i) for i in range(self.adapter.num_classes)]
        self.target_select = w.Dropdown(
            description="target",
            options=[("predicted class", PREDICTED), *classes],
            value=PREDICTED if self.state.target is None else self.state.target,
        )
        self.normalization_select = w.ToggleButtons(
            options=list(NORMALIZATIONS),
            value=normalization,
            tooltips=["one scale for all layers", "per layer"],
        )
        self.normalization_select.style.button_width = "70px"
        self.message = w.HTML()
        self.road_button = w.Button(
            description="score layers (ybROAD)",
            icon="line-chart",
            tooltip="score the layers with ybROAD (deletion and insertion of the map's pixels)",
            disabled=True,
            layout=w.Layout(width="auto"),
        )
        self.cancel_button = w.Button(
            description="cancel film / ybROAD",
            icon="stop",
            tooltip="cancel the film or the ybROAD scoring",
            layout=w.Layout(width="auto"),
        )

        self.view = CAManimView(fps=fps, size=size)
        self._build_chart()
        self.view._road_cursor, self.view._road_points = self.cursor, self.points
        controls = w.HBox([self.method_select, self.target_select, self.normalization_select])
        actions = w.HBox([self.road_button, self.cancel_button])
        super().__init__([controls, self.message, self.view, actions, self.figure])
        self.add_class("xai-camanim-player")

        self.method_select.observe(lambda change: self._request(), names="value")
        self.road_button.on_click(lambda _: self.score_layers())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.target_select.observe(
            lambda change: setattr(
                self.state, "target", None if change["new"] == PREDICTED else change["new"]
            ),
            names="value",
        )
        self.normalization_select.observe(self._on_normalization, names="value")
        self.view.observe(self._on_index, names="index")
        self.state.observe(self._on_picture, names="picture")
        self.state.observe(self._on_target, names="target")
        self.state.observe(lambda _: self._request(), names="randomization")
        if image is not None:
            self.set_image(image)
        elif self.state.picture is not None:
            self._on_picture({"new": self.state.picture})
        else:
            self._show_message("no image yet: call set_image(picture)")

    # ------------------------------------------------------------------ public
    @property
    def index(self) -> int:
        """The layer shown (its position in ``film.names``)."""
        return self.view.index

    @index.setter
    def index(self, value: int) -> None:
        self.view.index = int(value)

    @property
    def normalization(self) -> str:
        return self.normalization_select.value

    def set_image(self, image: Any, name: str = "") -> None:
        """Use a new picture; a bad one shows its error in the widget and raises InputError."""
        try:
            self.state.set_image(image, name)
        except InputError as error:
            self._show_message(f"could not use the image: {describe_error(error)}")
            raise

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the film and its ROAD scores are computed (scripts and tests)."""
        return self.runner.wait(timeout)

    def cancel(self) -> None:
        """Stop the film or the ybROAD scoring (within one batch); the frames shown so far stay."""
        self.runner.cancel("camanim")
        self.runner.cancel("road")

    def score_layers(self) -> None:
        """Score the film's layers (or ``road_sample`` of them) with ybROAD; the chart fills when done."""
        film, key = self.film, self._road_key
        if film is None or key is None:
            raise InputError("there is no film yet to score")
        indices = road_layers(len(film), self.road_sample)
        self.road_button.disabled = True
        what = "every layer" if len(indices) == len(film) else f"{len(indices)} of {len(film)} layers"
        self.view.status, self.view.progress = f"scoring {what} with ROAD…", 0.0
        self.runner.submit(
            "road",
            (*key, tuple(indices)),
            lambda progress: self._score(film, indices, progress),
            on_result=lambda scores: self._show_scores(scores, indices),
            on_error=self._show_error,
            on_progress=lambda done, total: setattr(self.view, "progress", done / max(total, 1)),
            on_cancel=self._road_cancelled,
        )

    def _score(self, film: CAManimResult, indices: list[int], progress: Any) -> LayerROAD:
        with film.adapter.using_params(self._params):
            return self._score_layers(film, indices, progress)

    def _score_layers(self, film: CAManimResult, indices: list[int], progress: Any) -> LayerROAD:
        if len(indices) == len(film):
            return film.road(self.percentiles, progress=progress)
        scores = ybroad(
            film.adapter, film.x, film.maps[indices], film.target_spec, self.percentiles, progress=progress
        )
        names = [film.names[i] for i in indices]
        return LayerROAD(names, scores.score, scores.morf, scores.lerf, tuple(scores.percentiles))

    def _film_cancelled(self) -> None:
        self.view.status, self.view.progress = "cancelled (change a control to compute again)", None

    def _road_cancelled(self) -> None:
        self.view.status, self.view.progress = "ybROAD cancelled (score layers to start again)", None
        self.road_button.disabled = self.film is None

    def save(self, path: str, **options: Any) -> Any:
        """Export the current film (MP4, GIF or PNG sheet; :mod:`xai_widgets.export`) as normalised here."""
        if self.film is None:
            raise InputError("there is no film yet")
        options.setdefault("mode", self.normalization)
        return self.film.save(path, **options)

    # ------------------------------------------------------------------- chart
    def _build_chart(self) -> None:
        self.x_scale = bqplot.LinearScale(min=0.0, max=1.0)
        self.y_scale = bqplot.LinearScale(min=-0.5, max=0.5)
        scales = {"x": self.x_scale, "y": self.y_scale}
        self.line = bqplot.Lines(x=[], y=[], scales=scales, colors=["#2a7ae2"], stroke_width=1.5)
        self.points = bqplot.Scatter(
            x=[],
            y=[],
            scales=scales,
            colors=["#2a7ae2"],
            default_size=40,
            interactions={"click": "select"},
            selected_style={"stroke": "#d62728", "stroke-width": 2},
            unselected_style={"opacity": 0.9},
            tooltip=bqplot.Tooltip(fields=["x", "y"], labels=["layer", "ybROAD"], formats=["", ".3f"]),
        )
        self.best_mark = bqplot.Scatter(
            x=[], y=[], scales=scales, marker="diamond", colors=["#e69f00"], default_size=160
        )
        self.cursor = bqplot.Lines(
            x=[0.0, 0.0],
            y=[-0.5, 0.5],
            scales=scales,
            colors=["#d62728"],
            stroke_width=2,
            preserve_domain={"x": True, "y": True},
        )
        # integer ticks at layers only (a "d" format over fractional ticks repeats "0 0 0 1 1"), and the
        # y label placed left of the widest tick label ("-0.123")
        self.x_axis = bqplot.Axis(
            scale=self.x_scale, label="layer (forward order)", tick_format="d", tick_values=[0]
        )
        self.y_axis = bqplot.Axis(
            scale=self.y_scale, side="left", label="ybROAD", tick_format=".2f", label_offset="50px"
        )
        self.figure = bqplot.Figure(
            marks=[self.line, self.cursor, self.points, self.best_mark],
            axes=[self.x_axis, self.y_axis],
            title="ybROAD per layer (higher: more faithful)",
            fig_margin={"top": 40, "bottom": 45, "left": 70, "right": 15},
            layout=w.Layout(width="520px", height="230px"),
        )
        self.figure.add_class("xai-camanim-road")

    def _show_scores(self, scores: LayerROAD, indices: Sequence[int] | None = None) -> None:
        """Draw the ybROAD curve at the film positions of the scored layers (all, or a sample)."""
        self.scores = scores
        values = scores.score[:, 0].numpy().astype(float)
        self.road_indices = list(range(len(values))) if indices is None else list(indices)
        layers = np.asarray(self.road_indices, dtype=float)
        count = len(self.film) if self.film is not None else len(values)
        low, high = float(values.min()), float(values.max())
        pad = max(0.02, 0.1 * (high - low))
        best = int(scores.best[0])
        sampled = "" if len(values) == count else f" ({len(values)} of {count} layers scored)"
        with self.figure.hold_sync():
            self.x_scale.min, self.x_scale.max = -0.5, count - 0.5
            self.x_axis.tick_values = integer_ticks(count)
            self.y_scale.min, self.y_scale.max = low - pad, high + pad
            self.line.x, self.line.y = layers, values
            self.points.x, self.points.y = layers, values
            self.best_mark.x, self.best_mark.y = [layers[best]], [float(values[best])]
            self.cursor.y = [low - pad, high + pad]
            self.cursor.x = [float(self.index)] * 2
            self.figure.title = f"best ybROAD: {scores.names[best]} ({values[best]:+.3f}){sampled}"
        self.view.best = self.road_indices[best]
        self.view.status, self.view.progress = "", None
        self.road_button.disabled = False

    # ----------------------------------------------------------------- handlers
    def _class_name(self, index: int) -> str:
        return f"{index}: {self.adapter.labels[index]}" if self.adapter.labels else f"class {index}"

    def _show_message(self, text: str) -> None:
        self.message.value = error_html(text)

    def _on_picture(self, change: dict) -> None:
        if change["new"] is not None:
            self._show_message("")
            self._request()

    def _on_target(self, change: dict) -> None:
        choice = PREDICTED if change["new"] is None else change["new"]
        if self.target_select.value != choice:
            self.target_select.value = choice
        self._request()

    def _on_normalization(self, change: dict) -> None:
        if self.film is not None:
            self.view.show(self.film, change["new"], self.state.display_picture())
            if self.scores is not None:
                self.view.best = self.road_indices[int(self.scores.best[0])]

    def _on_index(self, change: dict) -> None:
        self.cursor.x = [float(change["new"])] * 2

    # ----------------------------------------------------------------- requests
    def _key(self, kind: str) -> tuple:
        state = self.state
        return (
            kind,
            self.method_select.value,
            state.target,
            self.kinds,
            state.image_hash,
            state.randomization,
        )

    def _request(self) -> None:
        if self.state.picture is None:
            return
        method, target, kinds = self.method_select.value, self.state.target, self.kinds
        x, adapter, params = self.state.model_input(), self.adapter, self.state.params
        key = self._key("camanim")
        road_key = (*key, self.percentiles)
        if not self.runner.cached(key):
            self.view.status, self.view.progress = f"computing {method} at every layer…", 0.0
        self.runner.cancel("road")
        self.road_button.disabled = True

        def compute(progress: Any) -> CAManimResult:
            with adapter.using_params(params):
                return camanim(adapter, x, target, method=method, kinds=kinds, progress=progress).cpu()

        self.runner.submit(
            "camanim",
            key,
            compute,
            on_result=lambda film: self._show_film(film, road_key, params),
            on_error=self._show_error,
            on_progress=lambda done, total: setattr(self.view, "progress", done / max(total, 1)),
            on_cancel=self._film_cancelled,
        )

    def _show_film(self, film: CAManimResult, road_key: tuple, params: Any = None) -> None:
        self.film, self.scores, self.road_indices, self._road_key = film, None, [], road_key
        self._params = params
        target = None if film.target is None else int(film.target[0])
        randomized = f" (weights: {self.state.randomization})" if params is not None else ""
        self.view.title = (
            f"{film.method} → {self._class_name(target) if target is not None else 'custom'}{randomized}"
        )
        self.view.show(film, self.normalization, as_picture(self.state.display_picture()))
        self.view.error = ""
        with self.figure.hold_sync():
            for mark in (self.line, self.points, self.best_mark):
                mark.x, mark.y = [], []
            self.x_scale.min, self.x_scale.max = -0.5, len(film) - 0.5
            self.x_axis.tick_values = integer_ticks(len(film))
            self.figure.title = "ybROAD per layer (higher: more faithful)"
        self.road_button.disabled = False
        if self.road is True or (self.road == "auto" and len(film) <= AUTO_ROAD_LAYERS):
            self.score_layers()
            return
        count = len(road_layers(len(film), self.road_sample))
        what = "" if count == len(film) else f" ({count} sampled of {len(film)})"
        self.view.status, self.view.progress = f'ybROAD: press "score layers" to score the layers{what}', None

    def _show_error(self, error: BaseException) -> None:
        self.view.error = describe_error(error)
        self.view.status, self.view.progress = "", None
