"""InteractionBars: a layer's interaction-order spectrum (Activation Spectroscopy) as clickable bars.

Each bar is an interaction order k ≥ 1: the Fourier weight Σ_{|S|=k} f̂(S)² of the subsets of k units, split
into the weight of positive coefficients (above zero) and of negative ones (below). The empty set
(f̂(∅) = E[f], the part of f no unit changes) is stated apart, above the chart: it is often far larger
than every interaction and would flatten the bars. Clicking a bar lists that order's strongest subsets; choosing a
subset shows its units on the image (a conv channel's activation map) or, for a layer fed by a linear map
of the input (an MLP), the units' input weights as pictures. With ``compare`` models (the zoo's dropout
series), their order shares are overlaid for the same layer and class.

The widget follows an :class:`~xai_widgets.widgets.explorer.AttributionExplorer`'s image and target when
given one; all work goes through a :class:`~xai_widgets.widgets.jobs.JobRunner` (cached, latest request wins,
progress and cancel).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import bqplot
import ipywidgets as w
from torch import Tensor, nn

from ..actspec import FUNCTIONS, Spectrum, compare, spectroscopy, unit_maps
from ..errors import InputError, XAIError
from ..model import LayerInfo, ModelAdapter
from .explorer import AttributionExplorer, gallery, load_model
from .heatmap import HeatmapView
from .jobs import JobRunner, describe_error, error_html, show_gallery_image
from .state import ExplanationState

MODES = ("exact", "search")
MAX_EXACT_UNITS = 20
_UNIT_KINDS = ("activation", "conv", "linear", "norm", "pool", "block", "dropout")
# Okabe–Ito: distinguishable with every common colour-vision deficiency (no red/green pair)
_COLORS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
# a chart whose result is being recomputed is dimmed (after a short delay, so a cached answer never flickers)
STALE_STYLE = (
    "<style>.xai-actspec .xai-stale { opacity: 0.35; transition: opacity 0.2s ease 0.25s; }"
    ".xai-actspec .bqplot { transition: opacity 0.1s; }</style>"
)


def unit_layers(adapter: ModelAdapter) -> list[LayerInfo]:
    """Layers whose units can be switched: run once, at least two units, not the output layer."""
    catalogue = adapter.layers()
    return [
        entry
        for entry in catalogue[:-1]
        if entry.kind in _UNIT_KINDS and entry.calls == 1 and entry.out_shape and entry.out_shape[0] >= 2
    ]


def default_unit_layer(adapter: ModelAdapter) -> str:
    """The last activation that runs once (an MLP's hidden ReLU), else the last switchable layer."""
    layers = unit_layers(adapter)
    if not layers:
        raise XAIError(f"{adapter.name} has no layer with switchable units (run once, two units or more)")
    activations = [entry for entry in layers if entry.kind == "activation"]
    return (activations or layers)[-1].name


def subset_label(subset: Sequence[Any]) -> str:
    return "∅" if not subset else "{" + ", ".join(str(u) for u in subset) + "}"


class InteractionBars(w.VBox):
    """Interaction-order bars of a layer's units for one class, with the strongest subsets and their pictures.

    Args:
        model: an :class:`AttributionExplorer` to follow (its image and target), or what it accepts (an
            ``nn.Module``, a ModelAdapter or a zoo name such as ``"mnist-mlp-d20"``).
        image: picture(s) when no explorer is given (a gallery adds an image control).
        inputs: optional model-input batch; the "over" control then offers f averaged over these inputs
            (the function over a data set) besides the current image alone.
        layer: the layer (default: the last activation that runs once).
        target: class index, or None for the predicted class.
        n_units: units switched (the most relevant by |activation × gradient|); at most 20 in exact mode.
        mode: ``"exact"`` (all 2ⁿ states) or ``"search"`` (heavy coefficients over the chosen units).
        f: ``"indicator"``, ``"logit"`` or ``"probability"`` (see :func:`xai_widgets.actspec.spectroscopy`).
        on, off: the units' on and off values (see :func:`~xai_widgets.actspec.spectroscopy`).
        compare: name → model (or a list of zoo names): their order shares overlaid for the same layer, class
            and inputs (the zoo's ``mnist-mlp-d0``/``-d20``/``-d50`` show the shift with dropout).
        search: options of the search mode (``tau``, ``samples``, ``max_order``, ``seed``).
        top: rows of the coefficient table; size: width of each unit picture.
        background: compute in a background thread (False: inside each call, for scripts and tests).
        runner: a :class:`JobRunner` to share with other views (default: the explorer's, or a new one).

    Example:
        >>> bars = InteractionBars("mnist-mlp-d20", digits.images[:1], target=3, n_units=12)  # doctest: +SKIP
        >>> bars.spectrum.order_weights()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: AttributionExplorer | nn.Module | ModelAdapter | str,
        image: Any = None,
        *,
        inputs: Tensor | None = None,
        layer: str | None = None,
        target: int | None = None,
        n_units: int = 10,
        mode: str = "exact",
        f: str = "indicator",
        on: str | float | Tensor = "observed",
        off: float | str | Tensor = 0.0,
        compare: Mapping[str, nn.Module | ModelAdapter | str] | Sequence[str] | None = None,
        search: Mapping[str, Any] | None = None,
        top: int = 12,
        size: int = 120,
        background: bool = True,
        runner: JobRunner | None = None,
        **model_options: Any,
    ) -> None:
        if isinstance(model, AttributionExplorer):
            if image is not None or model_options:
                raise XAIError("with an explorer, choose the image in the explorer")
            self.state: ExplanationState = model.state
            self.runner: JobRunner = model.runner if runner is None else runner
            self.adapter: ModelAdapter = model.adapter
            images: dict[str, Any] = {}
        else:
            self.adapter = load_model(model, **model_options)
            self.state = ExplanationState(self.adapter)
            self.runner = runner if runner is not None else JobRunner(background=background)
            images = gallery(image)
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if f not in FUNCTIONS:
            raise InputError(f"f must be one of {', '.join(FUNCTIONS)}, got {f!r}")
        self.inputs = None if inputs is None else self.adapter.prepare(inputs)
        if images:
            first = next(iter(images))
            self.state.set_image(images[first], first)
        if self.state.picture is not None:
            self.adapter.prepare(self.state.model_input())  # without an input size the catalogue follows it
        self.on, self.off = on, off
        self.search_options = dict(search or {})
        self.top = max(1, int(top))
        self.size = int(size)
        self.spectrum: Spectrum | None = None
        self.compared: dict[str, Spectrum] = {}
        self.order: int | None = None
        self.subset: tuple[int, ...] | None = None
        self._images = images
        self._orders: list[int] = []
        self._rows: list[tuple[int, ...]] = []
        self._adjusting = False
        self._models = self._compare_models(compare)

        layers = [entry.name for entry in unit_layers(self.adapter)]
        layer = default_unit_layer(self.adapter) if layer is None else self.adapter.resolve_layer(layer).name
        if layer not in layers:
            raise InputError(f"layer {layer!r} has no switchable units; choose one of {', '.join(layers)}")

        self.image_select = w.Dropdown(description="image", options=list(images))
        self.image_select.layout.display = None if len(images) > 1 else "none"
        self.layer_select = w.Dropdown(description="layer", options=layers, value=layer)
        self.class_select = w.Dropdown(
            description="class",
            options=[("predicted class", None)]
            + [(self._class_name(i), i) for i in range(self.adapter.num_classes)],
        )
        self.class_select.add_class("xai-actspec-class")
        self.units_slider = w.IntSlider(description="units", min=1, max=2, value=2, continuous_update=False)
        self.mode_select = w.ToggleButtons(
            options=list(MODES), value=mode, style={"button_width": "64px"}, layout=w.Layout(flex="0 0 auto")
        )
        self.f_select = w.Dropdown(description="f", options=list(FUNCTIONS), value=f)
        over = [("this image", "image")] + (
            [(f"{self.inputs.shape[0]} inputs", "inputs")] if self.inputs is not None else []
        )
        self.over_select = w.Dropdown(description="over", options=over, value="image")
        self.over_select.layout.display = None if self.inputs is not None else "none"
        self.cancel_button = w.Button(
            description="cancel spectrum", icon="stop", tooltip="cancel the running spectrum"
        )
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="140px"))
        self.status = w.HTML()
        self.message = w.HTML()
        self.message.add_class("xai-actspec-error")

        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale()
        scales = {"x": self.x_scale, "y": self.y_scale}
        style = {
            "selected_style": {"stroke": "#000", "stroke-width": 2},
            "unselected_style": {"opacity": 0.75},
        }
        self.positive_bars = bqplot.Bars(
            x=[], y=[], scales=scales, colors=["#2a7ae2"], interactions={"click": "select"}, **style
        )
        self.negative_bars = bqplot.Bars(
            x=[], y=[], scales=scales, colors=["#d6604d"], interactions={"click": "select"}, **style
        )
        for mark, name in (
            (self.positive_bars, "weight of f̂ > 0"),
            (self.negative_bars, "− weight of f̂ < 0"),
        ):
            mark.tooltip = bqplot.Tooltip(fields=["x", "y"], labels=["order", name], formats=["", ".3g"])
        self.figure = bqplot.Figure(
            marks=[self.positive_bars, self.negative_bars],
            axes=[
                bqplot.Axis(scale=self.x_scale, label="interaction order |S|"),
                bqplot.Axis(
                    scale=self.y_scale,
                    side="left",
                    label="Σ f̂² (+ / −)",
                    tick_format=".1e",
                    label_offset="58px",
                ),
            ],
            title="interaction orders",
            fig_margin={"top": 40, "bottom": 45, "left": 75, "right": 10},
            layout=w.Layout(width="420px", height="280px"),
        )
        self.figure.add_class("xai-actspec-bars")
        self.empty_label = w.HTML()
        self.empty_label.add_class("xai-actspec-empty")
        self.table_title = w.HTML()
        self.table = w.Select(options=[], rows=8, layout=w.Layout(width="330px"))
        self.table.add_class("xai-actspec-table")
        self.units_box = w.Box(layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.units_box.add_class("xai-actspec-units")

        self.compare_scales = {"x": bqplot.LinearScale(), "y": bqplot.LinearScale(min=0.0)}
        self.compare_lines = bqplot.Lines(
            x=[], y=[], scales=self.compare_scales, marker="circle", labels=[], colors=list(_COLORS)
        )
        self.compare_axis = bqplot.Axis(
            scale=self.compare_scales["x"], label="interaction order |S|", tick_format="d", tick_values=[1]
        )
        self.compare_figure = bqplot.Figure(
            marks=[self.compare_lines],
            axes=[
                self.compare_axis,
                bqplot.Axis(
                    scale=self.compare_scales["y"],
                    side="left",
                    label="share of Var f",
                    tick_format=".2f",
                    label_offset="45px",
                ),
            ],
            title="order shares of the models compared",
            fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 10},
            layout=w.Layout(width="480px", height="280px"),
        )
        self.compare_figure.add_class("xai-actspec-compare")
        # the legend (model, colour, mean order) below the chart: never over the curves, never cut off
        self.compare_legend = w.HTML()
        self.compare_legend.add_class("xai-actspec-legend")
        self.compare_box = w.VBox([self.compare_figure, self.compare_legend])
        self.compare_box.layout.display = None if self._models else "none"
        style = w.HTML(STALE_STYLE, layout=w.Layout(display="none"))

        controls = w.VBox(
            [
                w.HBox([self.image_select, self.layer_select, self.class_select]),
                w.HBox([self.units_slider, self.mode_select, self.f_select, self.over_select]),
                w.HBox([self.cancel_button, self.progress, self.status]),
                self.message,
            ]
        )
        details = w.VBox([self.table_title, self.table])
        super().__init__(
            [
                controls,
                self.empty_label,
                w.HBox([self.figure, details]),
                self.units_box,
                self.compare_box,
                style,
            ]
        )
        self.add_class("xai-actspec")

        self._set_unit_range(n_units)
        with self.state.hold_trait_notifications():
            if target is not None:
                self.state.target = target
        self.class_select.value = self.state.target

        self.image_select.observe(self._on_image_choice, names="value")
        self.class_select.observe(self._on_class, names="value")
        self.mode_select.observe(self._on_mode, names="value")
        self.layer_select.observe(self._on_layer, names="value")
        for control in (self.units_slider, self.f_select, self.over_select):
            control.observe(lambda _: None if self._adjusting else self.request(), names="value")
        self.cancel_button.on_click(lambda _: self.cancel())
        for mark in (self.positive_bars, self.negative_bars):
            mark.observe(self._on_bar, names="selected")
        self.table.observe(self._on_row, names="value")
        self.state.observe(self._on_target, names="target")
        self.state.observe(lambda _: self.request(), names=["picture", "randomization"])

        self.request()

    # ------------------------------------------------------------------ public
    def request(self) -> None:
        """Compute (or take from the cache) the spectrum for the current choices; the latest request wins."""
        if self.state.picture is None and self.over_select.value == "image":
            self._say("no image yet: choose one (or give inputs and compute over them)")
            return
        try:
            key = self._key()
            options = self._options()  # taken now: the job may run after the controls have moved on
        except XAIError as error:
            self._say(describe_error(error))
            return
        layer, params = self.layer_select.value, self.state.params
        self._say("")
        if not self.runner.cached(key):
            self.status.value = "computing…"
            self.progress.value = 0.0
            self._stale(True)

        def compute(progress: Callable[[int, int], None]) -> Spectrum:
            with self.adapter.using_params(params):
                return spectroscopy(self.adapter, layer, progress=progress, **options)

        self.runner.submit(
            "actspec",
            key,
            compute,
            on_result=self._show,
            on_error=self._fail,
            on_progress=self._progress,
            on_cancel=self._cancelled,
        )
        if self._models:
            if not self.runner.cached(("compare", *key)):
                self.compare_figure.add_class("xai-stale")
            self.runner.submit(
                "actspec-compare",
                ("compare", *key),
                lambda progress: compare(self._models, layer, progress=progress, **options),
                on_result=self._show_compare,
                on_error=self._fail,
                on_cancel=lambda: self.compare_figure.remove_class("xai-stale"),
            )

    def select_order(self, order: int) -> None:
        """List the strongest subsets of interaction ``order`` (0 = the empty set) in the table."""
        if self.spectrum is None:
            raise XAIError("no spectrum yet")
        self.order = int(order)
        rows = self.spectrum.top(self.top, order=self.order)
        self._rows = [subset for subset, _ in rows]
        searched = self.spectrum.method == "search"
        options = []
        for subset, value in rows:
            text = f"{subset_label(subset):<24} {value:+.4g}"
            if searched:
                low, high = self.spectrum.interval(subset)
                text += f"  [{low:+.3f}, {high:+.3f}]"
            options.append((text, subset))
        weight = self.spectrum.order_weights().get(self.order, 0.0)
        self.table_title.value = (
            f"<b>order {self.order}</b>: total weight {weight:.3g}; its {len(rows)} strongest subsets"
            if rows
            else f"<b>order {self.order}</b>: no coefficient"
        )
        with self.table.hold_trait_notifications():
            self.table.options = options
            self.table.value = None

    def select_subset(self, subset: Sequence[int]) -> None:
        """Show the units of ``subset`` on the image (conv: activation maps; MLP: input weights)."""
        self.subset = tuple(int(u) for u in subset)
        if not self.subset:
            self.units_box.children = []
            return
        layer = self.spectrum.options["layer"] if self.spectrum is not None else self.layer_select.value
        units = self.subset
        if self.state.picture is not None:
            image, source = self.state.model_input(), self.state.image_hash
        elif self.inputs is not None:
            image, source = self.inputs[:1], "inputs"
        else:
            raise XAIError("no image to show the units on")
        spatial = self.adapter.resolve_layer(layer).spatial
        key = ("actspec-units", layer, units, self.state.randomization, source)
        self.runner.submit(
            "actspec-units",
            key,
            lambda progress: unit_maps(self.adapter, layer, units, image),
            on_result=lambda maps: self._show_units(units, maps, spatial),
            on_error=self._fail,
        )

    def cancel(self) -> None:
        self.runner.cancel("actspec")
        self.runner.cancel("actspec-compare")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested computation has finished (for scripts and tests)."""
        return self.runner.wait(timeout)

    # --------------------------------------------------------------- helpers
    def _class_name(self, index: int) -> str:
        label = self.adapter.label(index)
        return f"class {index}" if label == str(index) else f"{index}: {label}"

    def _compare_models(self, models: Any) -> dict[str, ModelAdapter]:
        if models is None:
            return {}
        if isinstance(models, Mapping):
            return {str(name): load_model(model) for name, model in models.items()}
        return {str(name): load_model(name) for name in models}

    def _layer_size(self) -> int:
        return self.adapter.resolve_layer(self.layer_select.value).out_shape[0]

    def _set_unit_range(self, value: int | None = None) -> None:
        size = self._layer_size()
        top = size if self.mode_select.value == "search" else min(size, MAX_EXACT_UNITS)
        if value is None:
            value = size if self.mode_select.value == "search" else min(self.units_slider.value, top)
        self._adjusting = True  # the caller requests once the range is set
        try:
            with self.units_slider.hold_trait_notifications():
                self.units_slider.max = max(top, 2)
                self.units_slider.value = max(1, min(int(value), top))
        finally:
            self._adjusting = False

    def _inputs(self) -> Tensor:
        return self.inputs if self.over_select.value == "inputs" else self.state.model_input()

    def _key(self) -> Hashable:
        source = "inputs" if self.over_select.value == "inputs" else self.state.image_hash
        return (
            "actspec",
            self.layer_select.value,
            self.state.target,
            self.units_slider.value,
            self.mode_select.value,
            self.f_select.value,
            source,
            repr(self.on),
            repr(self.off),
            tuple(sorted(self.search_options.items())),
            self.state.randomization,
        )

    def _options(self) -> dict[str, Any]:
        options = dict(
            inputs=self._inputs(),
            target=self.state.target,
            f=self.f_select.value,
            on=self.on,
            off=self.off,
            method=self.mode_select.value,
            n_units=self.units_slider.value,
        )
        if self.mode_select.value == "search":
            options.update(self.search_options)
        return options

    def _say(self, text: str) -> None:
        self.message.value = error_html(text)

    def _status(self, text: str) -> None:
        self.status.value = html.escape(text)
        self.progress.value = 0.0

    def _fail(self, error: BaseException) -> None:
        self._status("")
        self._say(describe_error(error))
        self._stale(False)

    def _cancelled(self) -> None:
        self._status("cancelled (change a control to compute again)")
        self._stale(False)

    def _stale(self, stale: bool) -> None:
        """Dim the charts while their result is recomputed (class ``xai-stale``), restore them when it is in."""
        for figure in (self.figure, self.compare_figure):
            if stale:
                figure.add_class("xai-stale")
            else:
                figure.remove_class("xai-stale")

    def _progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)
        self.status.value = f"{done}/{total}"

    # ------------------------------------------------------------------ events
    def _on_image_choice(self, change: dict) -> None:
        message = show_gallery_image(self.state, self._images, change["new"])
        if message:
            self._say(message)

    def _on_class(self, change: dict) -> None:
        if self.state.target != change["new"]:
            self.state.target = change["new"]

    def _on_target(self, change: dict) -> None:
        if self.class_select.value != change["new"]:
            self.class_select.value = change["new"]
        self.request()

    def _on_mode(self, change: dict) -> None:
        self._set_unit_range(None if change["new"] == "search" else MAX_EXACT_UNITS // 2)
        self.request()

    def _on_layer(self, change: dict) -> None:
        self._set_unit_range(None if self.mode_select.value == "search" else self.units_slider.value)
        self.request()

    def _on_bar(self, change: dict) -> None:
        selected = change["new"]
        if selected is None or len(selected) == 0 or self.spectrum is None:
            return
        mark = change["owner"]
        other = self.negative_bars if mark is self.positive_bars else self.positive_bars
        if other.selected is not None:
            other.selected = None
        self.select_order(self._orders[int(selected[-1])])

    def _on_row(self, change: dict) -> None:
        if change["new"] is not None:
            self.select_subset(change["new"])

    # ---------------------------------------------------------------- drawing
    def _show(self, spectrum: Spectrum) -> None:
        self.spectrum = spectrum
        self.figure.remove_class("xai-stale")
        signed = spectrum.signed_order_weights()
        floor = 1e-9 * max(spectrum.total_weight, 1e-12)
        present = [k for k, (p, q) in signed.items() if k > 0 and p + q > floor]
        highest = max(present, default=1)
        self._orders = list(range(1, highest + 1))
        labels = [str(k) for k in self._orders]
        empty = spectrum.value(())
        share = empty * empty / spectrum.total_weight if spectrum.total_weight > 0 else 0.0
        self.empty_label.value = (
            f"∅ (no unit switched, E[f]): f̂(∅) = {empty:+.4g}, weight {empty * empty:.3g} = {share:.0%} of "
            f"E[f²] = {spectrum.total_weight:.3g}"
        )
        with self.figure.hold_sync():
            self.x_scale.domain = labels
            self.positive_bars.x, self.negative_bars.x = labels, labels
            self.positive_bars.y = [signed.get(k, (0.0, 0.0))[0] for k in self._orders]
            self.negative_bars.y = [-signed.get(k, (0.0, 0.0))[1] for k in self._orders]
            for mark in (self.positive_bars, self.negative_bars):
                mark.selected = None
            target = spectrum.options.get("target")
            target_text = self._class_name(target) if isinstance(target, int) else "predicted classes"
            self.figure.title = f"{spectrum.n} units of {spectrum.options.get('layer')} → {target_text}"
        self._status(
            f"{spectrum.method}: {spectrum.evaluations:,} evaluations, explained {spectrum.explained:.0%}, "
            f"mean order {spectrum.mean_order():.2f}"
        )
        self._say("")
        self.select_order(self._strongest_order(signed))
        self.units_box.children = []

    @staticmethod
    def _strongest_order(signed: Mapping[int, tuple[float, float]]) -> int:
        orders = {k: p + q for k, (p, q) in signed.items() if k > 0}
        return max(orders, key=orders.get) if orders and max(orders.values()) > 0 else 0

    def _show_units(self, units: tuple[int, ...], maps: Tensor, spatial: bool) -> None:
        picture = self.state.display_picture() if spatial and self.state.picture is not None else None
        views = []
        for unit, values in zip(units, maps):
            title = f"channel {unit}" if spatial else f"unit {unit} input weights"
            view = HeatmapView(picture, values, title=title, size=self.size, clip="symmetric")
            views.append(view)
        self.units_box.children = views

    def _show_compare(self, spectra: dict[str, Spectrum]) -> None:
        self.compared = spectra
        present = [k for s in spectra.values() for k, share in s.order_shares().items() if share > 1e-4]
        orders = list(range(1, max(present, default=1) + 1))
        with self.compare_figure.hold_sync():
            self.compare_lines.x = orders
            self.compare_lines.y = [[s.order_shares().get(k, 0.0) for k in orders] for s in spectra.values()]
            self.compare_lines.labels = list(spectra)
            self.compare_axis.tick_values = orders
        self.compare_legend.value = " ".join(
            f"<span style='white-space:nowrap;margin-right:12px'><span style='color:{color}'>■</span> "
            f"{html.escape(name)}: mean order {s.mean_order():.2f}</span>"
            for (name, s), color in zip(spectra.items(), itertools.cycle(_COLORS))
        )
        self.compare_figure.remove_class("xai-stale")
