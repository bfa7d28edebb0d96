"""EvaluationBoard: a data-set evaluation as a method × metric table with intervals, charts and drill-down.

A view on :func:`xai_widgets.evaluate`: it runs the evaluation in a background job (progress per shard,
cancel between shards; finished shards stay in ``out``), or shows a finished :class:`Evaluation`. The table
has one button per method and metric with the mean and its 95% bootstrap interval, the best method of each
metric in bold; bqplot charts show the ROAD curves (MoRF solid, LeRF dashed) per method, the pointing game
per class and the sanity curves (similarity to the trained map per randomization step). A click on a cell
opens the images on which that method does worst for that metric in an :class:`AttributionExplorer`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import bqplot
import ipywidgets as w
import numpy as np

from ..errors import XAIError
from ..evaluation import Evaluation, evaluate
from .explorer import AttributionExplorer
from .jobs import JobRunner, describe_error, error_html

# Okabe–Ito, as in the other widgets: distinguishable with every common colour-vision deficiency
_COLORS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")


def _chart(title: str, x_label: str, y_label: str, x_scale: Any = None) -> tuple[bqplot.Figure, dict]:
    scales = {"x": x_scale or bqplot.LinearScale(), "y": bqplot.LinearScale()}
    axes = [
        bqplot.Axis(scale=scales["x"], label=x_label),
        bqplot.Axis(scale=scales["y"], side="left", label=y_label, tick_format=".2f"),
    ]
    figure = bqplot.Figure(
        marks=[],
        axes=axes,
        title=title,
        legend_location="top-right",
        fig_margin={"top": 40, "bottom": 45, "left": 55, "right": 10},
        layout=w.Layout(width="340px", height="260px"),
    )
    return figure, scales


class EvaluationBoard(w.VBox):
    """Run (or show) a data-set evaluation: table with intervals, charts, progress, cancel, worst images.

    Args:
        model, data, methods, metrics: as for :func:`xai_widgets.evaluate` (``model`` also opens the
            explorer of worst images); or pass ``result`` to show a finished evaluation.
        result: an :class:`Evaluation` to show (nothing is computed).
        worst: how many worst images a cell click opens.
        background: run in a background thread (False: inside the constructor, for scripts and tests).
        runner: a :class:`JobRunner` to share (the workbench passes its own for a model the other views use,
            so the evaluation and the views take turns on it); default: a new one.
        **options: passed to ``evaluate`` (labels, masks, executor, batch_size, out, seed, …).

    Example:
        >>> board = EvaluationBoard("shapes-resnet", "shapes:64", ["gradcam", "saliency"])  # doctest: +SKIP
        >>> board  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any = None,
        data: Any = None,
        methods: Any = ("gradcam", "saliency"),
        metrics: Any = ("road", "pointing_game"),
        *,
        result: Evaluation | None = None,
        worst: int = 6,
        background: bool = True,
        runner: JobRunner | None = None,
        **options: Any,
    ) -> None:
        if result is None and (model is None or data is None):
            raise XAIError("give model and data to evaluate, or result= to show a finished evaluation")
        self.model, self.data = model, data
        self.methods, self.metrics, self.options = methods, metrics, options
        self.worst_count = max(1, int(worst))
        self.result: Evaluation | None = None
        self.explorer: AttributionExplorer | None = None
        self.selected: tuple[str, str] | None = None
        self.runner = runner if runner is not None else JobRunner(background=background)
        self._shared = runner is not None  # the drill-down explorer then takes turns on it too

        self.run_button = w.Button(
            description="run", icon="play", tooltip="evaluate (finished shards are kept)"
        )
        self.cancel_button = w.Button(
            description="cancel", icon="stop", tooltip="stop after the current shard"
        )
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="220px"))
        self.status = w.HTML()
        self.message = w.HTML()
        self.message.add_class("xai-evaluation-error")
        self.table = w.GridBox(layout=w.Layout(grid_gap="2px"))
        self.table.add_class("xai-evaluation-table")
        self.road_chart, road_scales = _chart("ROAD: target probability", "pixels removed (%)", "p")
        self.road_lines = bqplot.Lines(x=[], y=[], scales=road_scales, display_legend=True)
        self.road_lerf_lines = bqplot.Lines(
            x=[], y=[], scales=road_scales, display_legend=True, line_style="dashed"
        )
        self.road_chart.marks = [self.road_lines, self.road_lerf_lines]
        self.pointing_chart, pointing_scales = _chart(
            "pointing game per class", "class", "hit rate", bqplot.OrdinalScale()
        )
        self.pointing_bars = bqplot.Bars(
            x=[], y=[], scales=pointing_scales, type="grouped", display_legend=True
        )
        self.pointing_chart.marks = [self.pointing_bars]
        self.sanity_chart, sanity_scales = _chart(
            "sanity: similarity to the trained map", "step", "similarity"
        )
        self.sanity_lines = bqplot.Lines(x=[], y=[], scales=sanity_scales, display_legend=True)
        self.sanity_chart.marks = [self.sanity_lines]
        for figure, name in (
            (self.road_chart, "road"),
            (self.pointing_chart, "pointing"),
            (self.sanity_chart, "sanity"),
        ):
            figure.add_class(f"xai-evaluation-{name}")
            figure.layout.display = "none"
        self.detail = w.VBox()
        self.detail_title = w.HTML()

        self.run_button.on_click(lambda _: self.run())
        self.cancel_button.on_click(lambda _: self.cancel())
        controls = w.HBox([self.run_button, self.cancel_button, self.progress, self.status])
        if result is not None:
            controls.layout.display = "none"
        charts = w.HBox([self.road_chart, self.pointing_chart, self.sanity_chart])
        super().__init__([controls, self.message, self.table, charts, self.detail_title, self.detail])
        self.add_class("xai-evaluation-board")
        if result is not None:
            self.show(result)
        else:
            self.run()

    # ------------------------------------------------------------------ public
    def run(self) -> None:
        """Start (or resume, with ``out``) the evaluation in the background."""
        self.message.value = ""
        self.progress.value = 0.0
        self.status.value = "starting…"

        def work(progress: Any) -> Evaluation:
            return evaluate(
                self.model, self.data, self.methods, self.metrics, progress=progress, **self.options
            )

        self.runner.submit(
            "evaluate",
            object(),
            work,
            on_result=self.show,
            on_error=self._show_error,
            on_progress=self._on_progress,
            on_cancel=lambda: setattr(self.status, "value", "cancelled (finished shards are kept in out)"),
        )

    def cancel(self) -> None:
        """Stop after the shard that is running."""
        self.runner.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the evaluation (and any explorer computation) has finished."""
        done = self.runner.wait(timeout)
        if self.explorer is not None:
            done = self.explorer.wait(timeout) and done
        return done

    def show(self, result: Evaluation) -> None:
        """Fill the table and charts from a finished evaluation."""
        self.result = result
        self.progress.value = 1.0
        errors = len(result.errors)
        self.status.value = f"{result.table['index'].nunique()} images" + (
            f", {errors} rows with errors" if errors else ""
        )
        self._fill_table(result)
        self._fill_road(result)
        self._fill_pointing(result)
        self._fill_sanity(result)

    def select(self, method: str, metric: str) -> None:
        """Open the images on which ``method`` does worst for ``metric`` in an AttributionExplorer."""
        if self.result is None:
            return
        worst = self.result.worst(method, metric, self.worst_count)
        if worst.empty:
            return
        self.selected = (method, metric)
        indices = [int(i) for i in worst["index"]]
        pictures = self.result.images(indices)
        gallery = {
            f"#{index}: {metric} {value:.3f}": picture
            for index, value, picture in zip(indices, worst["value"], pictures)
        }
        model = self.result.spec.local if self.result.spec is not None else self.model
        self.detail_title.value = (
            f"<b>{html.escape(method)}</b>: the {len(indices)} images with the worst {html.escape(metric)}"
        )
        try:
            self.explorer = AttributionExplorer(
                model,
                gallery,
                methods=[method],
                background=self.runner.background,
                size=160,
                runner=self.runner if self._shared else None,
            )
        except XAIError as error:
            self._show_error(error)
            return
        self.detail.children = [self.explorer]

    # --------------------------------------------------------------- internals
    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)
        self.status.value = f"{done}/{total} shards"

    def _show_error(self, error: BaseException) -> None:
        self.status.value = ""
        self.message.value = error_html(describe_error(error))

    def _fill_table(self, result: Evaluation) -> None:
        summary = result.summary[~result.summary["metric"].str.contains("@")]
        methods = list(dict.fromkeys(summary["method"]))
        metrics = list(dict.fromkeys(summary["metric"]))
        cells: list[w.Widget] = [w.HTML("<b>method</b>")] + [
            w.HTML(f"<b>{html.escape(m)}</b> {'↑' if self._higher(summary, m) else '↓'}") for m in metrics
        ]
        best = {}
        for metric in metrics:
            rows = summary[summary["metric"] == metric]
            pick = rows["mean"].idxmax() if self._higher(summary, metric) else rows["mean"].idxmin()
            best[metric] = rows.loc[pick, "method"] if rows["mean"].notna().any() else None
        for method in methods:
            cells.append(w.HTML(html.escape(method)))
            for metric in metrics:
                row = summary[(summary["method"] == method) & (summary["metric"] == metric)]
                if row.empty:
                    cells.append(w.HTML(""))
                    continue
                mean, low, high = (float(row[c].iloc[0]) for c in ("mean", "ci_low", "ci_high"))
                button = w.Button(
                    description=f"{mean:.3f} [{low:.3f}, {high:.3f}]",
                    tooltip=f"{method} · {metric}: click for the worst images",
                    layout=w.Layout(width="auto"),
                )
                button.style.font_weight = "bold" if best[metric] == method else "normal"
                button.add_class("xai-evaluation-cell")
                button.on_click(lambda _, m=method, k=metric: self.select(m, k))
                cells.append(button)
        self.table.layout.grid_template_columns = f"repeat({len(metrics) + 1}, max-content)"
        self.table.children = cells

    @staticmethod
    def _higher(summary: Any, metric: str) -> bool:
        return bool(summary[summary["metric"] == metric]["higher_is_better"].iloc[0])

    @staticmethod
    def _lines(mark: bqplot.Lines, x: Iterable[float], series: dict[str, np.ndarray]) -> None:
        names = list(series)
        with mark.hold_sync():
            mark.x = np.asarray(list(x), dtype=float)
            mark.y = np.stack([series[n] for n in names]) if names else []
            mark.labels = names
            mark.colors = [_COLORS[i % len(_COLORS)] for i in range(len(names))]

    def _fill_road(self, result: Evaluation) -> None:
        morf, lerf = result.curve("road_morf"), result.curve("road_lerf")
        if morf.empty:
            return
        self._lines(self.road_lines, morf.index, {f"{m} MoRF": morf[m].to_numpy() for m in morf.columns})
        self._lines(self.road_lerf_lines, lerf.index, {f"{m} LeRF": lerf[m].to_numpy() for m in lerf.columns})
        self.road_chart.layout.display = None

    def _fill_pointing(self, result: Evaluation) -> None:
        table = result.by_class("pointing_game")
        if table.empty:
            return
        adapter = result.spec.local if result.spec is not None else None
        names = [adapter.label(int(c)) if adapter is not None else str(c) for c in table.index]
        with self.pointing_bars.hold_sync():
            self.pointing_bars.x = names
            self.pointing_bars.y = table.to_numpy().T
            self.pointing_bars.labels = list(table.columns)
            self.pointing_bars.colors = [_COLORS[i % len(_COLORS)] for i in range(len(table.columns))]
        self.pointing_chart.layout.display = None

    def _fill_sanity(self, result: Evaluation) -> None:
        prefixes = sorted({m.split("@")[0] for m in result.summary["metric"] if m.startswith("sanity_")})
        if not prefixes:
            return
        curve = result.curve(prefixes[0])
        self.sanity_chart.title = f"sanity: {prefixes[0].removeprefix('sanity_')} to the trained map"
        self._lines(self.sanity_lines, curve.index, {m: curve[m].to_numpy() for m in curve.columns})
        self.sanity_chart.layout.display = None
