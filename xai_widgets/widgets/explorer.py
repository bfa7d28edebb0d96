"""AttributionExplorer: one image, its top predictions and several methods side by side, all linked.

Controls write an :class:`~xai_widgets.widgets.state.ExplanationState`; the predictions chart and one
:class:`~xai_widgets.widgets.heatmap.HeatmapView` per chosen method follow it. Every computation goes through
a :class:`~xai_widgets.widgets.jobs.JobRunner`: results are cached by (method, layer, target, options,
randomization, image), the latest request per view wins, long methods report progress and can be cancelled,
and errors appear in the widget in words while it stays usable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as w
import torch
from torch import Tensor, nn

from ..errors import InputError, MethodError, XAIError
from ..explanation import Explanation, degenerate_reason
from ..model import ModelAdapter, as_adapter
from ..registry import get_method
from ..registry import methods as registered_methods
from .feature_bars import FeatureBars
from .heatmap import HeatmapView
from .jobs import JobRunner, describe_error, error_html, show_gallery_image
from .state import ExplanationState

DEFAULT_METHODS = ("saliency", "integrated_gradients", "gradcam")
# Dropdown entries standing for None (ipywidgets reads a None value as "nothing selected").
PREDICTED = -1
DEFAULT_LAYER = ""


def gallery(images: Any) -> dict[str, Any]:
    """Name the images of a gallery: a mapping keeps its names, a list is numbered, a path gives its file name."""
    if images is None:
        return {}
    if isinstance(images, Mapping):
        return {str(name): image for name, image in images.items()}
    if isinstance(images, (list, tuple)):
        named = [gallery(image) for image in images]
        result: dict[str, Any] = {}
        for i, entry in enumerate(named):
            ((name, image),) = entry.items()
            result[name if name not in result else f"{name} ({i})"] = image
        return result
    if isinstance(images, Tensor) and images.ndim == 4 and images.shape[0] > 1:
        return {f"image {i}": image for i, image in enumerate(images)}
    if isinstance(images, (str, Path)):
        return {Path(images).name: images}
    return {"image": images}


def chosen_first(options: Sequence[str], chosen: Sequence[str]) -> list[str]:
    """The method list with the chosen ones on top (in their order), so a list that scrolls shows its choice."""
    return [*[m for m in chosen if m in options], *[m for m in options if m not in chosen]]


def load_model(
    model: nn.Module | ModelAdapter | str,
    *,
    labels: Sequence[str] | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: tuple[int, int, int] | None = None,
) -> ModelAdapter:
    """A ModelAdapter from a zoo name, an adapter, or an ``nn.Module`` with optional preprocessing and labels."""
    if isinstance(model, str):
        from .. import zoo

        model = zoo.load(model)
    given = {"labels": labels, "preprocess": preprocess, "mean": mean, "std": std, "input_size": input_size}
    given = {k: v for k, v in given.items() if v is not None}
    if isinstance(model, ModelAdapter):
        if given:
            raise InputError(
                f"the model is already a ModelAdapter; set {', '.join(given)} on the adapter instead"
            )
        return model
    return as_adapter(model, **given)


class AttributionExplorer(w.VBox):
    """Compare explanation methods on one image of one model, linked to a clickable top-k chart.

    Args:
        model: an ``nn.Module`` classifier, a ModelAdapter, or a zoo name (``"shapes-resnet"``).
        image: one picture (path, PIL image, H×W×C array, C×H×W tensor in [0, 1]) or a gallery
            (a list or a name → picture mapping); more can be uploaded in the widget.
        methods: registry names shown at start (default: saliency, integrated_gradients, gradcam, where
            registered).
        target: class index, or None for the predicted class.
        layer: catalogue name for the layer methods (CAM family), or None for the default CAM layer.
        labels, preprocess, mean, std, input_size: for a plain ``nn.Module`` (see ModelAdapter);
            ``preprocess`` maps a float [0, 1] N×C×H×W batch to model input.
        options: per-method options, e.g. ``{"integrated_gradients": {"steps": 16}}``.
        top_k: bars in the predictions chart.
        size: display width of each heatmap in pixels.
        background: compute in a background thread (False: inside each call, for scripts).
        runner: a :class:`JobRunner` to share with other views (the workbench passes its own); default: a new one.

    Example:
        >>> explorer = AttributionExplorer("shapes-resnet", images, methods=["saliency", "gradcam"])  # doctest: +SKIP
        >>> explorer  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter | str,
        image: Any = None,
        methods: Iterable[str] | None = None,
        target: int | None = None,
        layer: str | None = None,
        *,
        labels: Sequence[str] | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: tuple[int, int, int] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        top_k: int = 5,
        size: int = 224,
        background: bool = True,
        runner: JobRunner | None = None,
    ) -> None:
        adapter = load_model(
            model, labels=labels, preprocess=preprocess, mean=mean, std=std, input_size=input_size
        )
        available = [info.name for info in registered_methods()]
        chosen = [m for m in DEFAULT_METHODS if m in available] if methods is None else list(methods)
        for name in chosen:
            get_method(name)
        self.adapter = adapter
        self.state = ExplanationState(adapter, options={k: dict(v) for k, v in (options or {}).items()})
        self.runner = runner if runner is not None else JobRunner(background=background)
        self.top_k = max(1, int(top_k))
        self.size = int(size)
        self.views: dict[str, HeatmapView] = {}
        self.predicted: int | None = None
        self.probabilities: Tensor | None = None
        self._images = gallery(image)
        self._ordered: list[int] = []

        self.image_select = w.Dropdown(description="image", options=list(self._images))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.target_select = w.Dropdown(description="target", options=[("predicted class", PREDICTED)])
        self.method_select = w.SelectMultiple(
            description="methods",
            options=chosen_first(available, chosen),
            value=tuple(chosen),
            rows=min(8, max(3, len(available))),
        )
        self.layer_select = w.Dropdown(
            description="layer",
            options=[("default CAM layer", DEFAULT_LAYER)],
            layout=w.Layout(width="260px"),
        )
        self._choices_ready = self._fill_choices()
        if layer is not None and self._choices_ready:
            adapter.resolve_layer(layer)
        self.cancel_button = w.Button(
            description="cancel maps", icon="stop", tooltip="cancel the maps being computed"
        )
        self.message = w.HTML()
        self.message.add_class("xai-explorer-error")
        scales = {"x": bqplot.OrdinalScale(), "y": bqplot.LinearScale(min=0.0)}
        # the axis follows the data (an untrained 1000-class model's top p is ~0.001), and a faint
        # full-height column behind each bar takes the click, so a bar under a pixel tall can be chosen
        self.hit_bars = bqplot.Bars(
            x=[],
            y=[],
            scales=scales,
            interactions={"click": "select"},
            colors=["#7f7f7f"],
            opacities=[0.08],
            selected_style={"opacity": 0.08},
            unselected_style={"opacity": 0.08},
        )
        self.bars = bqplot.Bars(
            x=[],
            y=[],
            scales=scales,
            interactions={"click": "select"},
            selected_style={"fill": "#e8710a"},
            unselected_style={"opacity": 0.8},
            colors=["#2a7ae2"],
        )
        axes = [
            bqplot.Axis(scale=scales["x"], tick_rotate=-30, tick_style={"font-size": "10px"}),
            bqplot.Axis(
                scale=scales["y"],
                side="left",
                tick_format=".2~g",
                num_ticks=5,
                label="p",
                label_offset="36px",
            ),
        ]
        self.figure = bqplot.Figure(
            marks=[self.hit_bars, self.bars],
            axes=axes,
            title="top predictions",
            fig_margin={"top": 40, "bottom": 50, "left": 45, "right": 10},
            layout=w.Layout(width="300px", height="260px"),
        )
        self.figure.add_class("xai-explorer-predictions")
        self.figure.layout.tooltip = "click a bar to explain that class"
        self.grid = w.Box(layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.grid.add_class("xai-explorer-grid")

        with self.state.hold_trait_notifications():
            self.state.target = target
            self.state.layer = layer
            self.state.methods = chosen
        if self._choices_ready:
            self.target_select.value = PREDICTED if target is None else target
            self.layer_select.value = DEFAULT_LAYER if layer is None else layer
        controls = w.VBox(
            [
                w.HBox([self.image_select, self.upload, self.target_select]),
                w.HBox(
                    [
                        self.method_select,
                        w.VBox([self.layer_select, self.cancel_button]),
                    ]
                ),
                self.message,
            ]
        )
        super().__init__([controls, w.HBox([self.figure, self.grid])])
        self.add_class("xai-explorer")

        self.image_select.observe(self._on_image_choice, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.target_select.observe(
            lambda change: setattr(
                self.state, "target", None if change["new"] == PREDICTED else change["new"]
            ),
            names="value",
        )
        self.method_select.observe(
            lambda change: setattr(self.state, "methods", list(change["new"])), names="value"
        )
        self.layer_select.observe(
            lambda change: setattr(self.state, "layer", change["new"] or None), names="value"
        )
        self.cancel_button.on_click(lambda _: self.cancel())
        self.bars.observe(self._on_bar_selected, names="selected")
        self.hit_bars.observe(self._on_bar_selected, names="selected")
        self.state.observe(self._on_picture, names="picture")
        self.state.observe(self._on_target, names="target")
        self.state.observe(self._on_methods, names="methods")
        self.state.observe(self._on_choice, names=["layer", "options", "randomization"])
        self.state.observe(self._on_normalization, names=["normalization", "percentile"])

        self._sync_views()
        if self._images:
            self._on_image_choice({"new": self.image_select.value})
        else:
            self._show_message("no image yet: upload one")

    # ------------------------------------------------------------------ public
    def set_image(self, image: Any, name: str | None = None) -> None:
        """Add ``image`` to the gallery and explain it; a bad image shows its error in the widget and raises."""
        name = name or next(iter(gallery(image)))
        try:
            self.state.set_image(image, name)
        except InputError as error:
            self._show_message(f"could not use image {name!r}: {describe_error(error)}")
            raise
        self._images[name] = image
        if name not in self.image_select.options:
            self.image_select.options = [*self.image_select.options, name]
        with self.image_select.hold_trait_notifications():
            self.image_select.value = name

    def explanation(self, method: str) -> Explanation | None:
        """The cached Explanation ``method`` shows for the current choices (None while it is computing)."""
        return self.runner.get(self.state.key(method))

    def cancel(self) -> None:
        """Cancel every running computation; the views keep their last maps."""
        self.runner.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested computation has finished (for scripts and tests)."""
        return self.runner.wait(timeout)

    def refresh(self) -> None:
        """Recompute everything visible (e.g. after the model's weights changed in place)."""
        self.runner.clear_cache()
        self._request_all()

    # --------------------------------------------------------------- controls
    def _class_name(self, index: int) -> str:
        return f"{index}: {self.adapter.labels[index]}" if self.adapter.labels else f"class {index}"

    def _show_message(self, text: str) -> None:
        self.message.value = error_html(text)

    def _on_image_choice(self, change: dict) -> None:
        message = show_gallery_image(self.state, self._images, change["new"])
        if message:
            self._show_message(message)

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]
        name = f"upload: {upload['name']}"
        try:
            self.state.set_image(upload["content"], name)
        except InputError as error:
            self._show_message(f"could not use {upload['name']!r}: {describe_error(error)}")
            return
        self._images[name] = bytes(upload["content"])
        if name not in self.image_select.options:
            self.image_select.options = [*self.image_select.options, name]
        self.image_select.value = name

    def _on_bar_selected(self, change: dict) -> None:
        selected = change["new"]
        if selected is None or len(selected) == 0 or not self._ordered:
            return
        if change["owner"] is self.hit_bars:
            self.hit_bars.selected = None  # ready for the next click on the same column
        index = int(selected[-1])
        if not 0 <= index < len(self._ordered):
            return
        chosen = self._ordered[index]
        if self.state.target is None and chosen == self.predicted:
            return  # the chart marking the predicted class is not a new choice
        self.state.target = chosen

    # ------------------------------------------------------------------ state
    def _fill_choices(self) -> bool:
        """Fill the class and layer choices from the adapter's catalogue. False when the model cannot run at
        the adapter's default input size (no ``input_size`` given, e.g. an MLP): the choices are then filled
        from the first picture, whose size the adapter adopts."""
        try:
            spatial = [entry.name for entry in self.adapter.spatial_layers()]
            classes = self.adapter.num_classes
        except InputError:
            if self.adapter.has_input_size:
                raise
            return False
        target = PREDICTED if self.state.target is None else self.state.target
        layer = self.state.layer or DEFAULT_LAYER
        self.target_select.options = [("predicted class", PREDICTED)] + [
            (self._class_name(i), i) for i in range(classes)
        ]
        self.layer_select.options = [("default CAM layer", DEFAULT_LAYER)] + [
            (name, name) for name in spatial
        ]
        if target in (PREDICTED, *range(classes)):
            self.target_select.value = target
        if layer in (DEFAULT_LAYER, *spatial):
            self.layer_select.value = layer
        return True

    def _on_picture(self, change: dict) -> None:
        if change["new"] is None:
            return
        if not self._choices_ready:
            try:
                self.adapter.prepare(self.state.model_input())
                self._choices_ready = self._fill_choices()
            except XAIError as error:
                self._show_message(f"the model failed on this image: {describe_error(error)}")
                return
        self._show_message("")
        if not self.adapter.takes_vectors:
            picture = self.state.display_picture()
            for view in self.views.values():
                view.update(image=picture)
        self._request_predictions()
        self._request_all()

    def _on_target(self, change: dict) -> None:
        shown = PREDICTED if change["new"] is None else change["new"]
        if self.target_select.value != shown:
            self.target_select.value = shown
        self._mark_target()
        self._request_all()

    def _on_methods(self, change: dict) -> None:
        chosen = tuple(change["new"])
        for method in chosen:
            get_method(method)
        if any(m not in self.method_select.options for m in chosen):
            self.method_select.options = [info.name for info in registered_methods()]
        if self.method_select.value != chosen:
            # chosen from code (or another view): bring the choice to the top of the list, in sight
            with self.method_select.hold_trait_notifications():
                self.method_select.options = chosen_first(self.method_select.options, chosen)
                self.method_select.value = chosen
        self._sync_views()
        self._request_all()

    def _on_choice(self, change: dict) -> None:
        if change["name"] == "randomization":
            self._request_predictions()
        if change["name"] == "layer" and (self.layer_select.value or None) != change["new"]:
            self.layer_select.value = change["new"] or DEFAULT_LAYER
        self._request_all()

    def _on_normalization(self, change: dict) -> None:
        for view in self.views.values():
            if isinstance(view, FeatureBars):
                continue
            view.update(clip=self.state.normalization, percentile=self.state.percentile)

    def _sync_views(self) -> None:
        """One HeatmapView per chosen method, in the chosen order; the layer control only when one needs it."""
        for method in self.state.methods:
            if method not in self.views:
                self.views[method] = self._new_view(method)
        self.grid.children = [self.views[m] for m in self.state.methods]
        # the layer menu stays in place (no layout jump when a CAM is added); unused, it is disabled
        needs_layer = any(get_method(m).needs_layer for m in self.state.methods)
        self.layer_select.disabled = not needs_layer
        self.layer_select.tooltip = None if needs_layer else "no chosen method uses a layer (add a CAM)"

    def _new_view(self, method: str) -> HeatmapView | FeatureBars:
        """The view of one method: a heatmap over the picture, or feature bars for a model of feature vectors."""
        if self.adapter.takes_vectors:
            return FeatureBars(self.adapter.feature_names, title=method)
        view = HeatmapView(title=method, size=self.size, clip=self.state.normalization)
        if self.state.picture is not None:
            view.update(image=self.state.display_picture())
        return view

    # --------------------------------------------------------------- requests
    def _request_predictions(self) -> None:
        if self.state.picture is None:
            return
        key, logits = self.state.predictions_request()
        self.runner.submit(
            "predictions",
            key,
            lambda progress: torch.softmax(logits(), dim=0),
            on_result=self._show_predictions,
            on_error=lambda error: self._show_message(
                f"the model failed on this image: {describe_error(error)}"
            ),
        )

    def _show_predictions(self, probabilities: Tensor) -> None:
        self.probabilities = probabilities
        order = torch.argsort(probabilities, descending=True)[: self.top_k].tolist()
        self.predicted = order[0]
        self._ordered = order
        names = [self._class_name(i) for i in order]
        heights = [float(probabilities[i]) for i in order]
        with self.figure.hold_sync():
            self.bars.x, self.bars.y = names, heights
            self.hit_bars.x, self.hit_bars.y = names, [max(heights)] * len(names)
            self.hit_bars.selected = None
        self._mark_target()

    def _mark_target(self) -> None:
        target = self.state.target if self.state.target is not None else self.predicted
        selected = [self._ordered.index(target)] if target in self._ordered else None
        if (None if self.bars.selected is None else list(self.bars.selected)) != selected:
            self.bars.selected = selected

    def _request_all(self) -> None:
        if self.state.picture is None:
            return
        for method in self.state.methods:
            self._request(method)

    def _request(self, method: str) -> None:
        view = self.views[method]
        try:
            key, compute = self.state.request(method)
        except (InputError, MethodError) as error:
            view.update(error=describe_error(error), status="", progress=None)
            return
        if not self.runner.cached(key):
            cost = get_method(method).cost
            view.update(status="computing…" if cost == "cheap" else f"computing ({cost})…", progress=0.0)
        self.runner.submit(
            method,
            key,
            compute,
            on_result=lambda explanation: self._show(view, explanation),
            on_error=lambda error: view.update(error=describe_error(error), status="", progress=None),
            on_progress=lambda done, total: view.update(
                progress=done / max(total, 1), status=f"{done}/{total}"
            ),
            on_cancel=lambda: view.update(
                status="cancelled (change a control to compute again)", progress=None
            ),
        )

    def _show(self, view: HeatmapView | FeatureBars, explanation: Explanation) -> None:
        target = None if explanation.target is None else int(explanation.target[0])
        title = explanation.method + (f" @ {explanation.layer}" if explanation.layer else "")
        if target is not None:
            title += f" → {self._class_name(target)}"
        if isinstance(view, FeatureBars):
            view.show(explanation, title=title)
            view.update(status="", progress=None)
            return
        info = get_method(explanation.method)
        # a map that carries no picture (all zero, constant, non-finite) says so under the map
        flat = degenerate_reason(explanation.attribution[:1])
        view.update(
            map=explanation.attribution[0],
            signed=info.signed and bool((explanation.attribution < 0).any()),
            title=title,
            error="",
            status="" if flat is None else f"⚠ degenerate map: {flat}",
            progress=None,
        )
