"""SanityToggle: flip a model to randomized weights and scrub through the randomization steps, live.

The sanity check of Adebayo et al. (2018) as a control: a switch "randomize weights" and a slider over the
steps of :mod:`xai_widgets.sanity` (cascading: every layer from the logits down to the chosen one;
independent: the chosen layer only). The widget drives an :class:`AttributionExplorer`'s linked state, so
its heatmaps and top-k prediction bars redraw under the randomized weights; beside each map it shows how
similar the map still is to the trained model's (Spearman of the absolute maps, SSIM), its input alignment
(next to the plain gradient's and a patch-shuffled null) and its key-information sufficiency (next to the
edge-map and random-mask controls), and a bqplot chart of similarity against step, one line per method,
with a cursor at the current step.

Everything goes through the explorer's :class:`JobRunner`: results are cached by method, layer, target,
options, randomization and image, the latest request wins, and a full sweep over the steps shows progress
and can be cancelled. Switching the toggle off shows the trained model's maps from the cache.
"""

from __future__ import annotations

import html
from collections.abc import Hashable, Iterable
from typing import Any

import bqplot
import ipywidgets as w
import numpy as np
import torch
from torch import Tensor, nn

from .. import sanity
from ..errors import XAIError
from ..explain import explain
from ..explanation import Explanation
from ..metrics.alignment import input_alignment
from ..metrics.similarity import compare
from ..metrics.sufficiency import sufficiency
from ..model import ModelAdapter
from ..registry import methods as registered_methods
from .explorer import AttributionExplorer
from .jobs import describe_error, error_html

DEFAULT_METHODS = ("saliency", "guided_backprop", "gradcam")
# Okabe–Ito: distinguishable with every common colour-vision deficiency (no red/green pair)
_COLORS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")


class SanityToggle(w.VBox):
    """A weight-randomization switch and step slider for an explorer, with similarity curves and scores.

    Args:
        model: an :class:`AttributionExplorer` to drive (its views follow), or what it accepts (an
            ``nn.Module``, a ModelAdapter or a zoo name), in which case one is built with ``image`` and
            ``methods`` and shown inside this widget.
        image: picture(s) for a new explorer.
        methods: methods shown (default: saliency, guided_backprop, gradcam, where registered).
        mode: ``cascading`` or ``independent``; granularity: ``layer`` or ``block``; seed, reset_bn_stats:
            as in :func:`xai_widgets.sanity.randomized`.
        scores: compute input alignment and sufficiency beside each map (a few dozen forwards per map).
        size: display width of each heatmap; background: compute in a background thread.
        **explorer_options: passed to a new AttributionExplorer (labels, mean, std, input_size, …).

    Example:
        >>> toggle = SanityToggle("shapes-vgg", images[0], methods=["saliency", "guided_backprop"])  # doctest: +SKIP
        >>> toggle.randomize(True); toggle.step = 2  # doctest: +SKIP
    """

    def __init__(
        self,
        model: AttributionExplorer | nn.Module | ModelAdapter | str,
        image: Any = None,
        methods: Iterable[str] | None = None,
        *,
        mode: str = "cascading",
        granularity: str = "layer",
        seed: int = 0,
        reset_bn_stats: bool = False,
        scores: bool = True,
        size: int = 160,
        background: bool = True,
        **explorer_options: Any,
    ) -> None:
        sanity._check_mode(mode)
        if granularity not in sanity.GRANULARITIES:
            raise XAIError(
                f"granularity must be one of {', '.join(sanity.GRANULARITIES)}, got {granularity!r}"
            )
        if isinstance(model, AttributionExplorer):
            if image is not None or methods is not None or explorer_options:
                raise XAIError("with an existing explorer, choose the image and methods in the explorer")
            self.explorer, owned = model, False
        else:
            available = {info.name for info in registered_methods()}
            chosen = [m for m in DEFAULT_METHODS if m in available] if methods is None else list(methods)
            self.explorer = AttributionExplorer(
                model, image, chosen, size=size, background=background, **explorer_options
            )
            owned = True
        self.state = self.explorer.state
        self.runner = self.explorer.runner
        self.adapter: ModelAdapter = self.explorer.adapter
        self.seed = int(seed)
        self.reset_bn_stats = bool(reset_bn_stats)
        self.scores_enabled = bool(scores)
        self._curves: dict[Hashable, dict[str, dict[int, float]]] = {}
        self._score_html: dict[str, w.HTML] = {}
        self._auto_target: int | None = None

        self.toggle = w.ToggleButton(
            value=False,
            description="randomize weights",
            icon="random",
            tooltip="explain with the randomized weights of the chosen step",
            layout=w.Layout(width="auto", min_width="170px"),
        )
        self.toggle.add_class("xai-sanity-switch")
        self.mode_select = w.Dropdown(options=list(sanity.MODES), value=mode, description="mode")
        self.granularity_select = w.Dropdown(
            options=list(sanity.GRANULARITIES), value=granularity, description="steps"
        )
        self.slider = w.IntSlider(value=1, min=1, max=1, description="step", continuous_update=False)
        self.slider.add_class("xai-sanity-slider")
        self.step_label = w.HTML()
        self.step_label.add_class("xai-sanity-step")
        self.sweep_button = w.Button(
            description="sweep all steps", icon="play", layout=w.Layout(width="auto")
        )
        self.cancel_button = w.Button(
            description="cancel sweep",
            icon="stop",
            tooltip="cancel the sweep and the scores being computed",
            layout=w.Layout(width="auto"),
        )
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="160px"))
        self.status = w.HTML()
        self.message = w.HTML()
        self.message.add_class("xai-sanity-error")

        self.x_scale = bqplot.LinearScale(min=0.0, max=1.0)
        self.y_scale = bqplot.LinearScale(min=-0.2, max=1.0)
        scales = {"x": self.x_scale, "y": self.y_scale}
        self.lines = bqplot.Lines(x=[], y=[], scales=scales, marker="circle", marker_size=24, labels=[])
        self.cursor = bqplot.Lines(
            x=[0.0, 0.0], y=[-0.2, 1.0], scales=scales, colors=["#888"], line_style="dashed"
        )
        self.chart = bqplot.Figure(
            marks=[self.lines, self.cursor],
            axes=[
                bqplot.Axis(scale=self.x_scale, label="randomization step (0 = trained)", tick_format="d"),
                bqplot.Axis(scale=self.y_scale, side="left", label="Spearman |map|", tick_format=".1f"),
            ],
            title="similarity to the trained model's map",
            fig_margin={"top": 40, "bottom": 45, "left": 50, "right": 10},
            layout=w.Layout(width="420px", height="280px"),
        )
        self.chart.add_class("xai-sanity-chart")
        # the legend below the chart, never over the curves
        self.legend = w.HTML()
        self.legend.add_class("xai-sanity-legend")
        self.cards = w.Box(layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.cards.add_class("xai-sanity-cards")

        controls = w.VBox(
            [
                w.HBox([self.toggle, self.mode_select, self.granularity_select]),
                w.HBox([self.slider, self.step_label]),
                w.HBox([self.sweep_button, self.cancel_button, self.progress, self.status]),
                self.message,
            ]
        )
        if owned:  # the maps are shown in the cards below, with their scores
            self.explorer.grid.layout.display = "none"
        top = [self.explorer] if owned else []
        super().__init__([controls, *top, self.cards, self.chart, self.legend])
        self.add_class("xai-sanity")

        self.toggle.observe(lambda _: self._apply(), names="value")
        self.slider.observe(lambda _: self._apply(), names="value")
        self.mode_select.observe(lambda _: self._reschedule(), names="value")
        self.granularity_select.observe(lambda _: self._reschedule(), names="value")
        self.sweep_button.on_click(lambda _: self.sweep())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.state.observe(self._on_methods, names="methods")
        self.state.observe(self._on_inputs, names=["picture", "target", "layer", "options"])
        self.state.observe(self._on_randomization, names="randomization")

        self._reschedule()
        self._on_methods(None)

    # ------------------------------------------------------------------ public
    @property
    def steps(self) -> list[str]:
        """Names of the current mode's steps (step k is ``steps[k - 1]``)."""
        return list(self._names)

    @property
    def step(self) -> int:
        return int(self.slider.value)

    @step.setter
    def step(self, value: int) -> None:
        self.slider.value = int(value)

    def randomize(self, on: bool = True) -> None:
        """Switch the randomized weights on or off (the same as clicking the toggle)."""
        self.toggle.value = bool(on)

    def randomization_name(self, step: int | None = None) -> str:
        """The cache name of a step's weights under the current mode, granularity and seed."""
        step = self.step if step is None else int(step)
        return (
            f"{self.mode_select.value}/{self.granularity_select.value}/seed{self.seed}"
            f"{'/bn-reset' if self.reset_bn_stats else ''}/{step}:{self._names[step - 1]}"
        )

    def curve(self, method: str) -> dict[int, float]:
        """The similarity (mean Spearman of the absolute maps) per step computed so far for ``method``."""
        return dict(self._curves.get(self._schedule_key(), {}).get(method, {}))

    def sweep(self) -> None:
        """Compute every step for every shown method (cached), filling the similarity chart; cancellable."""
        if self.state.picture is None:
            self._show_message("no image yet")
            return
        self._show_message("")
        methods, names = list(self.state.methods), list(self._names)
        schedule = self._schedule_key()
        params = self._params_fn()
        self.progress.value = 0.0
        self.status.value = "sweeping…"

        def work(progress: Any) -> int:
            total = len(names) * len(methods)
            progress(0, total)
            done = 0
            for step in range(1, len(names) + 1):
                name = self._name(schedule, step, names)
                weights = params(step)
                for method in methods:
                    self._scores(method, name, weights, schedule, step, full=False)
                    done += 1
                    progress(done, total)
                self._logits(name, weights)
            return done

        self.runner.submit(
            "sanity-sweep",
            ("sanity-sweep", schedule, tuple(methods), self._inputs_key()),
            work,
            on_result=lambda _: self._sweep_done("sweep done"),
            on_error=lambda error: self._sweep_done(f"sweep failed: {describe_error(error)}"),
            on_progress=self._sweep_progress,
            on_cancel=lambda: self._sweep_done("sweep cancelled"),
        )

    def cancel(self) -> None:
        """Cancel the sweep and any running computation."""
        self.runner.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested computation has finished (for scripts and tests)."""
        return self.runner.wait(timeout)

    # ---------------------------------------------------------------- schedule
    def _schedule_key(self) -> tuple:
        return (self.mode_select.value, self.granularity_select.value, self.seed, self.reset_bn_stats)

    def _name(self, schedule: tuple, step: int, names: list[str]) -> str:
        mode, granularity, seed, reset = schedule
        return f"{mode}/{granularity}/seed{seed}{'/bn-reset' if reset else ''}/{step}:{names[step - 1]}"

    def _params_fn(self) -> Any:
        """A function step → parameters for the current schedule (it keeps its own copy of the choices)."""
        mode, granularity = self.mode_select.value, self.granularity_select.value
        seed, reset, adapter = self.seed, self.reset_bn_stats, self.adapter
        return lambda step: sanity.randomized(adapter, mode, step, granularity, seed, reset)

    def _reschedule(self) -> None:
        """New mode or granularity: new steps on the slider, the chart redrawn for them."""
        self._names = sanity.steps(self.adapter, self.granularity_select.value)
        with self.slider.hold_trait_notifications():
            value = min(self.slider.value, len(self._names))
            self.slider.max = len(self._names)
            self.slider.value = value
        self.x_scale.max = float(len(self._names))
        self._apply()
        self._draw_chart()

    # --------------------------------------------------------------- requests
    def _apply(self) -> None:
        """Set the explorer's state to the chosen weights; its views and bars follow, then the scores.

        The weights are drawn in the runner's worker (the one thread that uses the model), cached by step.
        With the target on "predicted class", the randomized model explains the class the *trained* model
        predicts (as in Adebayo et al.); switching off returns to "predicted class", so the trained maps come
        back from the cache.
        """
        self._describe_step()
        self._move_cursor()
        if not self.toggle.value:
            with self.state.hold_trait_notifications():
                if self._auto_target is not None and self.state.target == self._auto_target:
                    self.state.target = None
                self._auto_target = None
                self.state.randomize(None, "")
            return
        name, step, params = self.randomization_name(), self.step, self._params_fn()
        image = (
            self.state.image_hash if self.state.target is None and self.state.picture is not None else None
        )

        def work(progress: Any) -> tuple[dict[str, Tensor], int | None]:
            trained = None if image is None else self._logits("", None)
            return params(step), None if trained is None else int(trained.argmax())

        self.runner.submit(
            "sanity-weights",
            ("sanity-weights", name, image),
            work,
            on_result=lambda result: self._randomize(name, *result),
            on_error=lambda error: self._show_message(describe_error(error)),
        )

    def _randomize(self, name: str, params: dict[str, Tensor], trained_class: int | None) -> None:
        if not self.toggle.value or name != self.randomization_name():
            return
        with self.state.hold_trait_notifications():
            if trained_class is not None and self.state.target is None:
                self._auto_target = self.state.target = trained_class
            self.state.randomize(params, name)

    def _describe_step(self) -> None:
        name = html.escape(self._names[self.step - 1])
        where = "from the logits down to" if self.mode_select.value == "cascading" else "only"
        state = "randomized" if self.toggle.value else "trained weights (switch on to randomize)"
        self.step_label.value = (
            f"<code>{name}</code> &nbsp;<small>{where} this {self.granularity_select.value}; {state}</small>"
        )

    def _move_cursor(self) -> None:
        x = float(self.step) if self.toggle.value else 0.0
        self.cursor.x = [x, x]

    def _on_randomization(self, change: dict) -> None:
        self._request_scores()

    def _on_inputs(self, change: dict) -> None:
        if change["name"] == "picture" and self._auto_target is not None:
            with self.state.hold_trait_notifications():
                self.state.target, self._auto_target = None, None
            self._apply()
        self._draw_chart()
        self._request_scores()

    def _on_methods(self, change: dict | None) -> None:
        for method in self.state.methods:
            if method not in self._score_html:
                label = w.HTML(layout=w.Layout(width=f"{self.explorer.size}px"))
                label.add_class("xai-sanity-score")
                self._score_html[method] = label
        self.cards.children = [
            w.VBox([self.explorer.views[m], self._score_html[m]])
            for m in self.state.methods
            if m in self.explorer.views
        ]
        self._draw_chart()
        self._request_scores()

    def _inputs_key(self) -> tuple:
        return (
            self.state.target,
            self.state.layer,
            repr(sorted(self.state.options.items())),
            self.state.image_hash,
        )

    def _key(self, method: str, name: str) -> Hashable:
        """The explorer's cache key of ``method`` under the randomization ``name``."""
        return self.state.key(method, randomization=name)

    def _request_scores(self) -> None:
        if self.state.picture is None:
            return
        name, weights, schedule = self.state.randomization, self.state.params, self._schedule_key()
        step = self.step if name else 0
        for method in self.state.methods:
            label = self._score_html[method]
            label.value = "<small>scoring…</small>"
            self.runner.submit(
                ("sanity-scores", method),
                ("sanity-scores", self._key(method, name)),
                lambda progress, m=method: self._scores(m, name, weights, schedule, step),
                on_result=lambda scores, m=method: self._show_scores(m, scores),
                on_error=lambda error, m=method: self._score_html[m].set_trait(
                    "value", f"<span style='color:#a00'>{html.escape(describe_error(error))}</span>"
                ),
                on_cancel=lambda m=method: self._score_html[m].set_trait("value", ""),
            )

    # ------------------------------------------------------------ computation
    def _explanation(self, method: str, name: str, weights: dict[str, Tensor] | None) -> Explanation:
        """The explorer's Explanation of ``method`` under weights ``name`` (from the cache, else computed)."""
        key = self._key(method, name)
        cached = self.runner.get(key)
        if cached is not None:
            return cached
        options = dict(self.state.options.get(method, {}))
        with self.adapter.using_params(weights):
            result = explain(
                self.adapter,
                self.state.model_input(),
                self.state.target,
                method,
                self.state.layer_for(method),
                **options,
            ).cpu()
        self.runner.store(key, result)
        return result

    def _logits(self, name: str, weights: dict[str, Tensor] | None) -> Tensor:
        key = ("logits", name, self.state.image_hash)
        cached = self.runner.get(key)
        if cached is None:
            cached = torch.softmax(self.adapter.logits(self.state.model_input(), weights)[0].cpu(), dim=0)
            self.runner.store(key, cached)
        return cached

    def _scores(
        self,
        method: str,
        name: str,
        weights: dict[str, Tensor] | None,
        schedule: tuple,
        step: int,
        full: bool = True,
    ) -> dict[str, float]:
        """Similarity to the trained map of one method under one step and, with ``full`` (the shown step),
        its input alignment and sufficiency; the sweep asks for the similarity only."""
        full = full and self.scores_enabled
        keys = [("sanity-scores", self._key(method, name))]
        if not full:
            keys.append(("sanity-similarity", self._key(method, name)))
        for key in keys:
            cached = self.runner.get(key)
            if cached is not None:
                self._record(schedule, method, step, cached["spearman_abs"])
                return cached
        original = self._explanation(method, "", None)
        current = self._explanation(method, name, weights) if name else original
        similarity = compare(original, current, ("spearman_abs", "ssim"))
        scores = {metric: float(values.mean()) for metric, values in similarity.items()}
        if full:
            x = self.state.model_input()
            with self.adapter.using_params(weights if name else None):
                alignment = input_alignment(current, x, model=self.adapter, null_samples=4)
            scores.update({f"alignment_{k}": v for k, v in alignment.summary().items()})
            # sufficiency for the trained model: is the map still the key information of its decision?
            enough = sufficiency(self.adapter, x, current.attribution, target=current.target)
            scores.update(enough.summary())
        self.runner.store(keys[-1], scores)
        self._record(schedule, method, step, scores["spearman_abs"])
        return scores

    # ----------------------------------------------------------------- display
    def _record(self, schedule: tuple, method: str, step: int, value: float) -> None:
        self._curves.setdefault(schedule, {}).setdefault(method, {})[step] = value
        if schedule == self._schedule_key():
            self._draw_chart()

    def _draw_chart(self) -> None:
        methods = list(self.state.methods)
        curves = self._curves.get(self._schedule_key(), {})
        xs = np.arange(len(self._names) + 1, dtype=float)
        ys = np.full((max(len(methods), 1), len(xs)), np.nan)
        for row, method in enumerate(methods):
            for step, value in curves.get(method, {}).items():
                if 0 <= step < len(xs):
                    ys[row, step] = value
        colors = [_COLORS[i % len(_COLORS)] for i in range(len(methods))]
        seen = ys[np.isfinite(ys)]
        low = min(-0.2, float(seen.min()) - 0.05) if seen.size else -0.2  # every curve above the axis minimum
        with self.chart.hold_sync():
            self.lines.x = xs
            self.lines.y = ys
            self.lines.labels = methods
            self.lines.colors = colors
            self.y_scale.min = low
            self.cursor.y = [low, 1.0]
        self.legend.value = " ".join(
            f"<span style='white-space:nowrap;margin-right:12px'><span style='color:{color}'>■</span> "
            f"{html.escape(method)}</span>"
            for method, color in zip(methods, colors)
        )

    def _show_scores(self, method: str, scores: dict[str, float]) -> None:
        """Three short lines under the map (one each: similarity, input alignment, sufficiency); the full
        figures in the hover text, so a card narrower than the text does not wrap it into six lines."""
        lines = [f"similarity ρ|·| {scores['spearman_abs']:.2f} · SSIM {scores['ssim']:.2f}"]
        details = list(lines)
        if "alignment_cosine" in scores:
            lines.append(
                f"input alignment {scores['alignment_cosine']:.2f} (null {scores['alignment_null_cosine']:.2f})"
            )
            details.append(
                f"input alignment {scores['alignment_cosine']:.2f} (local {scores['alignment_local']:.2f}; "
                f"gradient {scores.get('alignment_gradient_cosine', float('nan')):.2f}, "
                f"shuffled {scores['alignment_null_cosine']:.2f})"
            )
        if "map_survival" in scores:
            lines.append(f"sufficiency {scores['map_survival']:.2f} (random {scores['random_survival']:.2f})")
            details.append(
                f"sufficiency {scores['map_survival']:.2f} (edge map {scores['edge_survival']:.2f}, "
                f"random {scores['random_survival']:.2f})"
            )
        rows = "".join(
            f"<div style='white-space:nowrap;overflow:hidden;text-overflow:ellipsis'>{html.escape(line)}</div>"
            for line in lines
        )
        self._score_html[method].value = (
            f"<div style='font-size:11px;line-height:1.35' title='{html.escape(chr(10).join(details))}'>"
            f"{rows}</div>"
        )

    def _sweep_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)
        self.status.value = f"{done}/{total}"

    def _sweep_done(self, text: str) -> None:
        self.status.value = html.escape(text)
        if text == "sweep done":
            self.progress.value = 1.0

    def _show_message(self, text: str) -> None:
        self.message.value = error_html(text)
