"""``evaluate``: methods × metrics over a whole data set, in shards, on one process or a cluster.

The same shard function (:func:`run_shard`) runs in-process or on a worker: it builds (or finds) the model,
reads its index range, explains each batch with every method and computes every metric, and returns one
tidy frame per method. Per-image randomness (the imputation noise of ROAD and deletion/insertion) is drawn
from ``(seed, image index)``, so a value never depends on the batch, shard or worker an image lands in, and
executors agree (to float rounding of the model's kernels under different thread counts).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ..errors import Cancelled, InputError, MethodError, XAIError
from ..model import ModelAdapter
from ..registry import MethodInfo, get_method, register_method
from ..registry import method_specs as _method_specs
from .executors import ModelSpec, load_adapter, resolve_executor
from .metrics_table import NEEDS_MASKS, Batch, compute, higher_is_better, metric_specs, summarize
from .shards import Item, ShardStore, as_source, shard_key, shard_ranges

COLUMNS = ["index", "method", "metric", "value", "label", "target", "prediction", "error"]
TARGETS = ("label", "prediction")
_BUILTIN_MODULES = ("xai_widgets.methods.",)


@dataclass
class Task:
    """One shard: its index range and what to compute on it (only the methods not yet in the store)."""

    start: int
    stop: int
    methods: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    target: str
    batch_size: int
    seed: int
    payload: Any = field(repr=False)
    read: Callable[..., list[Item]] = field(repr=False)
    custom: dict[str, MethodInfo] = field(default_factory=dict, repr=False)


def noise_field(index: int, shape: Sequence[int], seed: int) -> Tensor:
    """The imputation noise of data-set image ``index`` (standard normal, C×H×W), from ``(seed, index)``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return torch.randn(tuple(shape), generator=generator)


def _rows(
    items: Sequence[Item], method: str, values: Mapping[str, Tensor], extra: Mapping[str, Tensor]
) -> list:
    rows = []
    for i, item in enumerate(items):
        for metric, column in values.items():
            rows.append(
                (
                    item.index,
                    method,
                    metric,
                    float(column[i]),
                    item.label,
                    int(extra["target"][i]),
                    int(extra["prediction"][i]),
                    None,
                )
            )
    return rows


def _error_rows(items: Sequence[Item], method: str, error: BaseException | str) -> list:
    text = (
        error
        if isinstance(error, str)
        else (str(error) if isinstance(error, XAIError) else f"{type(error).__name__}: {error}")
    )
    return [(item.index, method, None, float("nan"), item.label, None, None, text) for item in items]


def _check_item(item: Item, adapter: ModelAdapter) -> Item:
    """An item whose picture cannot be evaluated gets its error (the run goes on without it)."""
    if item.error is not None:
        return item
    image = item.image
    problem = None
    if not isinstance(image, Tensor) or image.ndim != 3:
        problem = f"the picture must be C×H×W, got {tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__}"
    elif image.is_floating_point() and not bool(torch.isfinite(image).all()):
        problem = "the picture contains NaN or infinite values"
    elif adapter.in_channels is not None and image.shape[0] != adapter.in_channels:
        problem = f"the model expects {adapter.in_channels} channels, the picture has {image.shape[0]}"
    if problem is not None:
        item.error, item.image = problem, None
    return item


def _explain_batch(adapter: ModelAdapter, items: list[Item], task: Task) -> dict[str, list]:
    """Rows of every method for a batch of good items; a failing batch is retried image by image."""
    from ..explain import explain

    images = torch.stack([item.image for item in items])
    x = adapter.preprocess(images)
    with torch.no_grad(), adapter.evaluating():
        prediction = adapter.forward(x).argmax(1)
    if task.target == "label":
        if any(item.label is None for item in items):
            raise InputError("target='label' needs a label for every image; use target='prediction'")
        target = torch.tensor([item.label for item in items], device=x.device)
    else:
        target = prediction
    masks = None
    if all(item.mask is not None for item in items):
        masks = torch.stack([item.mask for item in items]).to(x.device)
    noise = torch.stack([noise_field(item.index, x.shape[1:], task.seed) for item in items]).to(x)
    extra = {"target": target.cpu(), "prediction": prediction.cpu()}
    out: dict[str, list] = {}
    for method, options in task.methods.items():
        try:
            explanation = explain(adapter, x, target, method, **options)
            batch = Batch(adapter, x, explanation, target, masks, noise, method, options, task.seed)
            values: dict[str, Tensor] = {}
            for metric, metric_options in task.metrics.items():
                values.update(compute(metric, batch, metric_options))
            out[method] = _rows(items, method, values, extra)
        except Cancelled:
            raise
        except Exception as error:
            if len(items) == 1:
                out[method] = _error_rows(items, method, error)
            else:  # find the image that fails; the others keep their rows
                single = {**task.__dict__, "methods": {method: options}}
                out[method] = [
                    row for item in items for row in _explain_batch(adapter, [item], Task(**single))[method]
                ]
    return out


def run_shard(spec: ModelSpec, shared: Any, task: Task) -> dict[str, pd.DataFrame]:
    """Evaluate one shard: ``{method: tidy frame}`` (the function every executor runs)."""
    for name, info in task.custom.items():
        try:
            get_method(name)
        except MethodError:
            register_method(
                name,
                info.fn,
                family=info.family,
                needs_layer=info.needs_layer,
                cost=info.cost,
                batched=info.batched,
                signed=info.signed,
                description=info.description,
            )
    adapter = load_adapter(spec)
    items = [_check_item(item, adapter) for item in task.read(shared, task.payload, task.start, task.stop)]
    rows: dict[str, list] = {method: [] for method in task.methods}
    bad = [item for item in items if item.error is not None]
    for method in task.methods:
        for item in bad:
            rows[method].extend(_error_rows([item], method, item.error))
    good = [item for item in items if item.error is None]
    for start in range(0, len(good), task.batch_size):
        for method, found in _explain_batch(adapter, good[start : start + task.batch_size], task).items():
            rows[method].extend(found)
    return {method: _frame(found) for method, found in rows.items()}


def _frame(rows: list) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["index"] = frame["index"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    for column in ("label", "target", "prediction"):
        frame[column] = frame[column].astype("Int64")
    frame["metric"] = frame["metric"].astype("string")
    frame["error"] = frame["error"].astype("string")
    frame["method"] = frame["method"].astype("string")
    return frame.sort_values(["index", "metric"], kind="stable").reset_index(drop=True)


@dataclass
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes:
        table: tidy frame, one row per image × method × metric row name: ``index`` (in the data set),
            ``method``, ``metric``, ``value``, ``label``, ``target``, ``prediction``, ``error`` (a row with
            an error has no metric and value: the image could not be evaluated, and why).
        summary: per method and metric, ``mean``, the 95% bootstrap interval ``ci_low``..``ci_high``, ``n``
            images and ``higher_is_better``.
        methods, metrics: what was computed, with their options; ``out``: the shard folder (or None).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    methods: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    out: Path | None = None
    source: Any = field(default=None, repr=False)
    spec: ModelSpec | None = field(default=None, repr=False)

    @property
    def errors(self) -> pd.DataFrame:
        """Rows of the images that could not be evaluated (``index``, ``method``, ``error``)."""
        return self.table[self.table["error"].notna()][["index", "method", "error"]].reset_index(drop=True)

    def values(self, method: str, metric: str) -> pd.Series:
        """Per-image values of one method and metric row, indexed by the data-set index."""
        rows = self.table[(self.table["method"] == method) & (self.table["metric"] == metric)]
        return rows.set_index("index")["value"]

    def worst(self, method: str, metric: str, k: int = 6) -> pd.DataFrame:
        """The ``k`` images on which ``method`` does worst for ``metric`` (by the metric's direction)."""
        rows = self.table[(self.table["method"] == method) & (self.table["metric"] == metric)]
        return rows.sort_values("value", ascending=higher_is_better(metric), kind="stable").head(k)

    def curve(self, prefix: str) -> pd.DataFrame:
        """Means of the rows ``prefix@p`` per parameter p (rows) and method (columns), e.g. ``road_morf``."""
        rows = self.summary[self.summary["metric"].str.startswith(prefix + "@")]
        frame = rows.assign(at=rows["metric"].str.split("@").str[1].astype(float))
        return frame.pivot(index="at", columns="method", values="mean").sort_index()

    def by_class(self, metric: str) -> pd.DataFrame:
        """Mean of ``metric`` per class (the target; rows) and method (columns), e.g. the pointing game."""
        rows = self.table[self.table["metric"] == metric]
        return rows.pivot_table(index="target", columns="method", values="value", aggfunc="mean")

    def images(self, indices: Sequence[int]) -> Tensor:
        """The pictures of data-set ``indices`` (for the worst-image views)."""
        from .shards import TensorSource

        source = self.source
        if isinstance(source, TensorSource):
            return source.images[list(indices)]
        return torch.stack(
            [torch.as_tensor(source.read(source.shared, None, i, i + 1)[0].image) for i in indices]
        )


class TextProgress:
    """A one-line text progress bar on stderr (for the command line and scripts)."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        filled = int(self.width * done / max(total, 1))
        elapsed = time.monotonic() - self.started
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} shards  {elapsed:6.1f} s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def evaluate(
    model: nn.Module | ModelAdapter | ModelSpec | str,
    data: Any,
    methods: Any = ("saliency", "gradcam"),
    metrics: Any = ("road", "pointing_game"),
    *,
    labels: Any = None,
    masks: Any = None,
    target: str | None = None,
    executor: Any = None,
    batch_size: int = 32,
    shard_size: int | None = None,
    out: str | Path | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
    seed: int = 0,
    factory: Callable[[], nn.Module] | None = None,
) -> Evaluation:
    """Evaluate explanation methods with faithfulness, localisation and sanity metrics over a data set.

    Args:
        model: a zoo name (``"shapes-resnet"``), a ModelAdapter or ``nn.Module`` (with its preprocessing),
            or a :class:`~xai_widgets.evaluation.ModelSpec`. Never modified.
        data: pictures in [0, 1]: a tensor N×C×H×W, a ``ShapesBatch``, ``"shapes:N"``, or a torch Dataset /
            DataLoader yielding ``image``, ``(image, label)`` or ``(image, label, mask)``.
        methods: registered method names, or ``{name: options}``.
        metrics: names from ``xai_widgets.evaluation.METRICS``, or ``{name: options}``.
        labels, masks: for tensor data: N class indices, N×H×W object masks.
        target: explain the ``label`` or the model's ``prediction`` (default: the label when the data have
            labels).
        executor: None (this process), ``"dask"`` (a LocalCluster, one worker per core), a
            ``distributed.Client``, a :class:`~xai_widgets.evaluation.DaskExecutor`, or ``"ray"``.
        batch_size: images per explanation batch; shard_size: images per shard (default: ``batch_size``).
        out: a folder for the Parquet shards; a rerun with the same folder skips finished shards.
        progress: ``callable(done, total)`` after each shard (raise ``xai_widgets.Cancelled`` to stop;
            finished shards stay in ``out``), or True for a text bar on stderr.
        seed: seeds the imputation noise (per image) and the tie-breaking of pixel ranks.
        factory: builds the architecture in a worker when the module's class needs arguments.

    Returns:
        An :class:`Evaluation` with the tidy ``table`` and the ``summary`` with 95% bootstrap intervals.

    Example:
        >>> result = evaluate("shapes-resnet", "shapes:64", ["gradcam", "saliency"], ["road"])  # doctest: +SKIP
        >>> result.summary  # doctest: +SKIP
    """
    if target is not None and target not in TARGETS:
        raise InputError(f"target must be 'label' or 'prediction', got {target!r}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size or batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    spec = ModelSpec.of(model, factory)
    local = load_adapter(spec)
    source = as_source(data, labels, masks, input_size=local.input_size)
    method_specs = _method_specs(methods)
    metric_options = metric_specs(metrics)
    needing = [m for m in metric_options if m in NEEDS_MASKS]
    if needing and not source.has_masks:
        raise InputError(
            f"metric(s) {', '.join(needing)} need object masks: give masks= or data that yields them"
        )
    if target is None:
        target = "label" if source.has_labels else "prediction"
    elif target == "label" and not source.has_labels:
        raise InputError(
            "target='label' needs labels: give labels= or data that yields them, or target='prediction'"
        )
    custom = {
        name: get_method(name)
        for name in method_specs
        if not getattr(get_method(name).fn, "__module__", "").startswith(_BUILTIN_MODULES)
    }
    store = ShardStore(out) if out is not None else None
    ranges = shard_ranges(len(source), shard_size or batch_size)
    frames: dict[tuple[str, int], pd.DataFrame] = {}
    paths: dict[tuple[str, int], Path] = {}
    tasks: list[Task] = []
    for start, stop in ranges:
        missing = {}
        for method, options in method_specs.items():
            key = shard_key(
                model=spec.fingerprint,
                data=source.key,
                method=method,
                options=options,
                metrics=metric_options,
                target=target,
                seed=seed,
                start=start,
                stop=stop,
            )
            if store is not None:
                paths[method, start] = path = store.path(method, start, stop, key)
                if store.has(path):
                    frames[method, start] = store.read(path)
                    continue
            missing[method] = options
        if missing:
            tasks.append(
                Task(
                    start,
                    stop,
                    missing,
                    metric_options,
                    target,
                    batch_size,
                    seed,
                    source.payload(start, stop),
                    source.read,
                    custom,
                )
            )
    report = TextProgress() if progress is True else (progress or None)
    total, done = len(ranges), len(ranges) - len(tasks)
    if report is not None:
        report(done, total)
    if tasks:
        runner, owned = resolve_executor(executor)
        try:
            for task, result in runner.map(run_shard, spec, source.shared, tasks):
                for method, frame in result.items():
                    frames[method, task.start] = frame
                    if store is not None:
                        store.write(paths[method, task.start], frame)
                done += 1
                if report is not None:
                    report(done, total)
        finally:
            if owned:
                runner.close()
    order = list(method_specs)
    parts = [frames[method, start] for method in order for start, _ in ranges if (method, start) in frames]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return Evaluation(
        table=table,
        summary=summarize(table, seed=seed),
        methods=method_specs,
        metrics=metric_options,
        out=None if out is None else Path(out),
        source=source,
        spec=spec,
    )
