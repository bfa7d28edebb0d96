"""ActivationMaximizer: watch activation maximization run, and compare backward slopes (Linse et al. 2024).

Choose a class, or a layer and its channel or unit, the backward slope (the slider marks the model's own
forward slope), the optimiser, the parameterisation and the steps; the picture being optimised is drawn live on
an ipycanvas (one binary image buffer per frame, no base64: PNG up to 128×128 px, JPEG above, at most ``fps``
frames a second, enlarged in the browser), the
activation per step grows as a bqplot line, one line per run so slopes can be compared, next to each run's
saturation score and the dataset pictures that drive the same unit most (cut to the unit's receptive field).
The final picture is also kept in an ``ipywidgets.Image`` (a binary traitlet), so a saved notebook or Voila shows
it without a kernel. Runs go through a :class:`~xai_widgets.widgets.jobs.JobRunner`: stop cancels them
(``xw.Cancelled``), errors show in the widget. Linked to an explorer (:meth:`ActivationMaximizer.link`), the
explorer's class and CAM layer fill the objective.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bqplot
import ipycanvas
import ipywidgets as w
import numpy as np
import torch
from torch import Tensor, nn

from ..activation_max import (
    OPTIMIZERS,
    PARAMETERIZATIONS,
    DatasetExamples,
    MaximizationResult,
    dataset_examples,
    maximize,
)
from ..errors import InputError, XAIError
from ..methods.backward_slope import ACTIVATIONS, forward_slope
from ..model import ModelAdapter
from .explorer import load_model
from .jobs import JobRunner, describe_error, error_html
from .state import ExplanationState

LOSSLESS_PIXELS = 128 * 128  # live frames up to this size travel as PNG, larger ones as JPEG
COLORS = ("#2a7ae2", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def to_rgb(pictures: Tensor, scale: int) -> np.ndarray:
    """N×C×H×W pictures in [0, 1] as one H'×(N·W')×3 uint8 strip, ``scale``× enlarged (nearest neighbour)."""
    pictures = pictures.detach()
    if pictures.shape[1] != 3:
        pictures = pictures[:, :1].expand(-1, 3, -1, -1)
    # rounding by +0.5 and truncation: one fused pass on the contiguous tensor, before the permute
    pixels = pictures.float().mul(255.0).add_(0.5).clamp_(0.0, 255.0).to("cpu", torch.uint8)
    strip = pixels.permute(2, 0, 3, 1).reshape(pixels.shape[2], -1, 3).numpy()
    return strip.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else strip


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def parse_unit(text: str) -> int | tuple[int, ...]:
    """``"3"`` → 3 (a channel), ``"3, 4, 5"`` → (3, 4, 5) (one unit); anything else raises InputError."""
    parts = [p.strip() for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if not numbers:
        raise InputError(f"the unit must be a channel (3) or a unit index (3, 4, 5), got {text!r}")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


class ActivationMaximizer(w.VBox):
    """Activation maximization of a class, a channel or a unit, drawn live, with the backward slope as a knob.

    Args:
        model: an ``nn.Module`` classifier, a ModelAdapter or a zoo name (``"shapes-leaky"``).
        target: the class to maximise (default: class 0 unless ``layer`` is given).
        layer, unit: a layer of the catalogue and its channel (int) or unit (tuple), instead of a class.
        backward_slope: the slope of the first run (None: the model's own backward).
        optimizer, parameterization, steps, lr, n: as in :func:`xai_widgets.maximize`.
        options: further :func:`~xai_widgets.maximize` options (``range``, ``jitter``, ``tv``, …).
        examples: N×C×H×W pictures searched for dataset examples (default: 256 shapes); ``show_examples``:
            search after each run; ``k``: how many to show.
        size: display height of the pictures in pixels; fps: most live frames per second.
        state: an explorer's ExplanationState to follow (see :meth:`link`).
        background: run in a background thread (False: inside each call, for scripts and tests).
        runner: a :class:`JobRunner` to share with other views (the workbench passes its own); default: a new one.

    Example:
        >>> am = ActivationMaximizer("shapes-leaky", target=2)  # doctest: +SKIP
        >>> am.run(); am.run(backward_slope=0.3); am.wait(); am.runs[-1].result.final  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter | str,
        target: int | None = None,
        layer: str | None = None,
        unit: int | Sequence[int] | None = None,
        *,
        backward_slope: float | None = None,
        optimizer: str = "ascent",
        parameterization: str = "pixel",
        steps: int = 128,
        lr: float | None = None,
        n: int = 1,
        options: dict[str, Any] | None = None,
        examples: Tensor | None = None,
        show_examples: bool = True,
        k: int = 6,
        size: int = 192,
        fps: float = 6.0,
        state: ExplanationState | None = None,
        background: bool = True,
        runner: JobRunner | None = None,
    ) -> None:
        self.adapter = load_model(model) if state is None else state.adapter
        self.runner = (
            runner
            if runner is not None
            else JobRunner(cache_size=4, background=background, progress_interval=0.05)
        )
        self.options = dict(options or {})
        self.lr, self.n, self.k = lr, int(n), int(k)
        self.examples_set, self.show_examples = examples, bool(show_examples)
        self.size, self.fps = int(size), float(fps)
        self.runs: list[Any] = []
        self.examples: DatasetExamples | None = None
        self.frames_drawn = 0
        self._counter = itertools.count()
        self._last_draw = 0.0
        self._failed_line: bqplot.Lines | None = None

        slopes = sorted(
            {forward_slope(m) for m in self.adapter.model.modules() if isinstance(m, ACTIVATIONS)}
        )
        self.forward_slopes = slopes
        classes = [(self._class_name(i), i) for i in range(self.adapter.num_classes)]
        layers = [(f"{e.name}  ({'×'.join(map(str, e.out_shape))})", e.name) for e in self._layers()]
        self.mode = w.ToggleButtons(options=["class", "layer"], value="layer" if layer else "class")
        self.mode.style.button_width = "60px"
        self.class_select = w.Dropdown(description="class", options=classes, value=target or 0)
        self.layer_select = w.Dropdown(
            description="layer", options=layers, value=layer if layer is not None else self._default_layer()
        )
        self.unit_text = w.Text(
            description="unit",
            value="" if unit is None else str(unit).strip("()"),
            placeholder="c or c, y, x",
        )
        self.slope_own = w.Checkbox(
            description="model's own backward", value=backward_slope is None, indent=False
        )
        own = slopes[0] if slopes else 0.0
        self.slope = w.FloatSlider(
            value=own if backward_slope is None else float(backward_slope),
            min=0.0,
            max=1.0,
            step=0.01,
            readout_format=".2f",
            layout=w.Layout(width="300px"),
        )
        self.slope_marks = w.HTML(self._marks_html())
        self.optimizer = w.Dropdown(description="optimizer", options=list(OPTIMIZERS), value=optimizer)
        self.parameterization = w.Dropdown(
            description="param.", options=list(PARAMETERIZATIONS), value=parameterization
        )
        self.steps = w.BoundedIntText(description="steps", value=steps, min=1, max=100000)
        self.run_button = w.Button(description="run", icon="play", button_style="primary")
        self.stop_button = w.Button(description="stop", icon="stop")
        self.clear_button = w.Button(description="clear runs", icon="trash")
        self.export_name = w.Text(description="export", value="maximization", layout=w.Layout(width="260px"))
        self.png_button = w.Button(description="PNG", icon="download")
        self.gif_button = w.Button(description="GIF", icon="film")
        self.message = w.HTML()
        self.message.add_class("xai-maximizer-error")
        self.status = w.HTML()
        self.progress = w.FloatProgress(min=0.0, max=1.0, value=0.0, layout=w.Layout(width="300px"))

        height = self.adapter.input_size[1]
        self.scale = max(1, self.size // max(1, height))
        self.canvas = ipycanvas.Canvas(
            width=self.scale * self.adapter.input_size[2] * self.n, height=self.scale * height
        )
        self.canvas.add_class("xai-maximizer-canvas")
        self.canvas.image_smoothing_enabled = False
        self.final = w.Image(format="png", layout=w.Layout(display="none"))
        self.final.add_class("xai-maximizer-final")
        self.summary = w.HTML()
        self.examples_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self._build_chart()

        objective = w.VBox([self.mode, self.class_select, self.layer_select, self.unit_text])
        slope = w.VBox([w.Label("backward slope"), self.slope, self.slope_marks, self.slope_own])
        settings = w.VBox([self.optimizer, self.parameterization, self.steps])
        buttons = w.HBox([self.run_button, self.stop_button, self.clear_button])
        export = w.HBox([self.export_name, self.png_button, self.gif_button])
        picture = w.VBox([self.canvas, self.final, self.status, self.progress])
        super().__init__(
            [
                w.HBox([objective, slope, settings]),
                buttons,
                self.message,
                w.HBox([picture, self.figure]),
                self.summary,
                self.examples_box,
                export,
            ]
        )
        self.add_class("xai-maximizer")

        self.mode.observe(lambda _: self._sync_mode(), names="value")
        self.slope_own.observe(lambda c: setattr(self.slope, "disabled", c["new"]), names="value")
        self.slope.disabled = self.slope_own.value
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.cancel())
        self.clear_button.on_click(lambda _: self.clear())
        self.png_button.on_click(lambda _: self._export(".png"))
        self.gif_button.on_click(lambda _: self._export(".gif"))
        self._sync_mode()
        self.state: ExplanationState | None = None
        if state is not None:
            self.link(state)

    # ------------------------------------------------------------------ public
    def objective(self) -> dict[str, Any]:
        """The chosen objective as ``maximize`` arguments: ``{"target": c}`` or ``{"layer": l, "unit": u}``."""
        if self.mode.value == "class":
            return {"target": int(self.class_select.value)}
        if self.layer_select.value is None:
            raise InputError("choose a layer")
        return {"layer": self.layer_select.value, "unit": parse_unit(self.unit_text.value)}

    def backward_slope(self) -> float | None:
        return None if self.slope_own.value else float(self.slope.value)

    def run(self, **overrides: Any) -> None:
        """Start a run with the controls' settings (``overrides`` replace any of them, e.g. backward_slope=0.3);
        an invalid choice shows its error in the widget."""
        self._show_message("")
        try:
            kwargs = {
                **self.objective(),
                "steps": int(self.steps.value),
                "optimizer": self.optimizer.value,
                "parameterization": self.parameterization.value,
                "backward_slope": self.backward_slope(),
                "lr": self.lr,
                "n": self.n,
                **self.options,
                **overrides,
            }
        except XAIError as error:
            self._show_message(describe_error(error))
            return
        label = self._label(kwargs)
        run_id = next(self._counter)
        line = self._new_line(label)
        self._failed_line = line
        preview = self.previewer(line)
        self.canvas.layout.display = None
        self.final.layout.display = "none"
        self.status.value, self.progress.value = f"running: {label}", 0.0

        def compute(progress: Any) -> MaximizationResult:
            return maximize(self.adapter, progress=progress, preview=preview, **kwargs)

        self.runner.submit(
            "run",
            ("run", run_id),
            compute,
            on_result=lambda result: self._finished(result, label, line, kwargs),
            on_error=self._failed,
            on_progress=lambda done, total: setattr(self.progress, "value", done / max(total, 1)),
            on_cancel=lambda: self._cancelled(label),
        )

    def cancel(self) -> None:
        """Stop the running optimisation (the picture and curve so far stay)."""
        self.runner.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the runs and dataset examples are done (scripts and tests)."""
        return self.runner.wait(timeout)

    def clear(self) -> None:
        """Forget every run (the curves and the table)."""
        self.runs.clear()
        self.curves.marks = [self.curves.marks[0]]
        self.summary.value = ""

    def link(self, explorer: Any) -> None:
        """Follow an AttributionExplorer (or its ExplanationState): its class and CAM layer fill the objective."""
        state = explorer.state if hasattr(explorer, "state") else explorer
        if not isinstance(state, ExplanationState):
            raise InputError(
                f"link expects an AttributionExplorer or an ExplanationState, got {type(explorer)}"
            )
        if state.adapter is not self.adapter and state.adapter.model is not self.adapter.model:
            raise InputError("the explorer explains another model than this maximizer")
        self.state = state
        state.observe(self._on_state_target, names="target")
        state.observe(self._on_state_layer, names="layer")
        if state.target is not None:
            self._on_state_target({"new": state.target})

    def save(self, path: str | Path, **options: Any) -> Path:
        """Export the latest run: .png (final pictures) or .gif (the optimisation), see
        :meth:`MaximizationResult.save`."""
        if not self.runs:
            raise InputError("there is no run to export yet")
        return self.runs[-1].result.save(path, **options)

    # -------------------------------------------------------------------- views
    def _build_chart(self) -> None:
        self.x_scale, self.y_scale = bqplot.LinearScale(), bqplot.LinearScale()
        scales = {"x": self.x_scale, "y": self.y_scale}
        axes = [
            bqplot.Axis(scale=self.x_scale, label="step", tick_format="d"),
            bqplot.Axis(scale=self.y_scale, side="left", label="activation", tick_format=".3g"),
        ]
        self._scales = scales
        baseline = bqplot.Lines(x=[0.0], y=[0.0], scales=scales, colors=["#ffffff"], opacities=[0.0])
        self.curves = bqplot.Figure(
            marks=[baseline],
            axes=axes,
            title="activation per step",
            legend_location="bottom-right",
            fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 15},
            layout=w.Layout(width="480px", height="300px"),
        )
        self.curves.add_class("xai-maximizer-curve")
        self.figure = self.curves

    def _new_line(self, label: str) -> bqplot.Lines:
        color = COLORS[(len(self.curves.marks) - 1) % len(COLORS)]
        line = bqplot.Lines(
            x=[],
            y=[],
            scales=self._scales,
            colors=[color],
            labels=[label],
            display_legend=True,
            stroke_width=2,
        )
        self.curves.marks = [*self.curves.marks, line]
        return line

    def _marks_html(self) -> str:
        """A strip under the slider marking the forward slope(s) of the model's activations."""
        if not self.forward_slopes:
            return "<div style='font-size:11px;color:#888'>no ReLU or LeakyReLU in this model</div>"
        marks = "".join(
            f"<div style='position:absolute;left:calc(8px + {s:.3f} * (100% - 16px));top:0;"
            f"transform:translateX(-50%);color:#d62728;font-size:11px;white-space:nowrap'>▲ forward {s:g}</div>"
            for s in self.forward_slopes
        )
        return f"<div class='xai-maximizer-forward' style='position:relative;width:300px;height:16px'>{marks}</div>"

    def _class_name(self, index: int) -> str:
        return f"{index}: {self.adapter.labels[index]}" if self.adapter.labels else f"class {index}"

    def _default_layer(self) -> str | None:
        try:
            return self.adapter.default_cam_layer().name
        except XAIError:
            layers = self._layers()
            return layers[-1].name if layers else None

    def _layers(self) -> list:
        return [e for e in self.adapter.layers() if e.out_shape is not None]

    def _sync_mode(self) -> None:
        layer = self.mode.value == "layer"
        self.class_select.layout.display = "none" if layer else None
        self.layer_select.layout.display = None if layer else "none"
        self.unit_text.layout.display = None if layer else "none"

    def _show_message(self, text: str) -> None:
        self.message.value = error_html(text)

    def _label(self, kwargs: dict) -> str:
        slope = kwargs.get("backward_slope")
        slope_text = "own" if slope is None else f"{slope:g}"
        return f"slope {slope_text} · {kwargs['optimizer']} · {kwargs['parameterization']}"

    # ----------------------------------------------------------------- running
    def previewer(self, line: bqplot.Lines) -> Callable[[int, Tensor, Tensor], None]:
        """The ``preview`` of one run (called after every step, in the worker thread): keep the values, and at
        most ``fps`` times a second draw the picture and extend the run's curve ``line``."""
        values_so_far: list[Tensor] = []
        last = [0.0]

        def preview(step: int, pictures: Tensor, values: Tensor) -> None:
            values_so_far.append(values)
            now = time.monotonic()
            if now - last[0] < 1.0 / self.fps:
                return
            last[0] = now
            self._draw(pictures)
            curve = torch.stack(values_so_far).float().mean(1).cpu().numpy()
            with line.hold_sync():
                line.x, line.y = np.arange(len(curve), dtype=float), curve

        return preview

    def _draw(self, pictures: Tensor) -> None:
        """One frame: the pictures at their own size, enlarged in the browser by the canvas transform without
        smoothing. ipycanvas encodes RGBA losslessly as PNG and RGB as JPEG: frames up to 128×128 pixels go as
        PNG (under 1 ms), larger ones as JPEG (about 1 ms at 224×224, where PNG takes 5–40 ms: a live preview
        must not slow the optimisation); the final picture is always lossless (``final``)."""
        strip = to_rgb(pictures, 1)
        if strip.shape[0] * strip.shape[1] <= LOSSLESS_PIXELS:
            strip = np.concatenate([strip, np.full((*strip.shape[:2], 1), 255, np.uint8)], 2)
        with ipycanvas.hold_canvas():
            self.canvas.set_transform(self.scale, 0, 0, self.scale, 0, 0)
            self.canvas.put_image_data(strip, 0, 0)
        self.frames_drawn += 1

    def _finished(self, result: MaximizationResult, label: str, line: bqplot.Lines, kwargs: dict) -> None:
        curve = result.activations.mean(1).numpy().astype(float)
        with line.hold_sync():
            line.x, line.y = np.arange(len(curve), dtype=float), curve
        strip = to_rgb(result.images, self.scale)
        self._draw(result.images)
        self.final.value = png(strip)
        self.final.layout.display = None
        self.canvas.layout.display = "none"
        self.runs.append(_Run(label, kwargs, result))
        self.progress.value = 1.0
        self.status.value = f"done: {label} — {result.objective}"
        self._show_summary()
        if self.show_examples:
            self._request_examples(kwargs)

    def _show_summary(self) -> None:
        rows = "".join(
            f"<tr><td>{run.label}</td><td>{run.result.objective}</td>"
            f"<td style='text-align:right'>{float(run.result.final.mean()):.4g}</td>"
            f"<td style='text-align:right'>{float(run.result.saturation.mean()):.3f}</td>"
            f"<td style='text-align:right'>{float(run.result.white.mean()):.3f}</td></tr>"
            for run in self.runs
        )
        self.summary.value = (
            "<table class='xai-maximizer-runs' style='font-size:12px'><tr><th>run</th><th>objective</th>"
            "<th>activation</th><th>saturation</th><th>white</th></tr>" + rows + "</table>"
        )

    def _failed(self, error: BaseException) -> None:
        self._show_message(describe_error(error))
        self.status.value = ""
        line = self._failed_line
        if line is not None and len(line.x) == 0:
            self.curves.marks = [m for m in self.curves.marks if m is not line]

    def _cancelled(self, label: str) -> None:
        self.status.value = f"stopped: {label} (the picture and curve so far are shown)"

    def _request_examples(self, kwargs: dict) -> None:
        objective = {key: kwargs[key] for key in ("target", "layer", "unit") if key in kwargs}
        key = ("examples", tuple(sorted((k, repr(v)) for k, v in objective.items())))
        self.runner.submit(
            "examples",
            key,
            lambda progress: dataset_examples(
                self.adapter, images=self.examples_set, k=self.k, progress=progress, **objective
            ),
            on_result=self._show_examples,
            on_error=lambda error: self._show_message(f"dataset examples: {describe_error(error)}"),
        )

    def _show_examples(self, examples: DatasetExamples) -> None:
        self.examples = examples
        tiles = []
        for crop, value in zip(examples.crops, examples.values.tolist()):
            scale = max(1, 64 // max(crop.shape[1:]))
            image = w.Image(value=png(to_rgb(crop[None], scale)), format="png")
            tiles.append(w.VBox([image, w.HTML(f"<div style='font-size:11px'>{value:.3g}</div>")]))
        title = w.HTML("<b>dataset examples</b> (receptive field of the strongest unit)")
        self.examples_box.children = [title, *tiles]

    def _export(self, suffix: str) -> None:
        try:
            path = self.save(self.export_name.value + suffix)
        except (XAIError, OSError) as error:
            self._show_message(describe_error(error))
            return
        self.status.value = f"saved {path}"

    # ------------------------------------------------------------------ linking
    def _on_state_target(self, change: dict) -> None:
        if change["new"] is not None:
            self.class_select.value = int(change["new"])
            self.mode.value = "class"

    def _on_state_layer(self, change: dict) -> None:
        names = [value for _, value in self.layer_select.options]
        if change["new"] in names:
            self.layer_select.value = change["new"]
            self.mode.value = "layer"
            if not self.unit_text.value:
                self.unit_text.value = "0"


class _Run:
    """One finished run: its label, settings and result."""

    def __init__(self, label: str, kwargs: dict, result: MaximizationResult) -> None:
        self.label, self.kwargs, self.result = label, kwargs, result

    def __repr__(self) -> str:
        return f"Run({self.label}: {float(self.result.final.mean()):.4g})"
