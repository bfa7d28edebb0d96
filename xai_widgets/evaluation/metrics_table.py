"""The metrics an evaluation can compute per image, and the summary with bootstrap confidence intervals.

Each metric turns one batch (the model input, one method's Explanation, the targets, the masks) into one or
more named per-image values. A name with ``@`` carries a parameter: ``road_morf@20`` is the target's
probability with the 20% most relevant pixels removed, ``sanity_ssim@3`` the SSIM between the map at
randomization step 3 and the trained model's map.

==================== ========================================================================= ==========
metric               rows (per image)                                                          better
==================== ========================================================================= ==========
road                 ``road`` (ybROAD, mean of (LeRF − MoRF)/2), ``road_morf@p``,               higher
                     ``road_lerf@p``, ``road_morf_accuracy@p`` (prediction still the target,
                     Quantus's ROAD); p ∈ {20, 40, 60, 80}, noisy linear imputation
deletion             ``deletion_auc`` (20 steps, imputation fill)                              lower
insertion            ``insertion_auc``                                                          higher
pointing_game        ``pointing_game`` (1 hit, 0 miss; needs masks)                            higher
energy_pointing_game ``energy_pointing_game`` (share of positive energy on the object)         higher
input_alignment      ``input_alignment``, ``input_alignment_local`` (cosine with the input)    lower
sufficiency          ``sufficiency`` (mean survival), ``sufficiency_ratio``                    higher
sanity               ``sanity_<similarity>@k`` per cascading randomization step k              lower
==================== ========================================================================= ==========

The summary gives, per method and row name, the mean over images and a 95% bootstrap percentile interval
(``resamples`` draws of the images with replacement, seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from ..errors import InputError, MethodError
from ..explanation import Explanation
from ..model import ModelAdapter


@dataclass
class Batch:
    """One method's explanation of a batch, as every metric sees it."""

    adapter: ModelAdapter
    x: Tensor
    explanation: Explanation
    target: Tensor
    masks: Tensor | None
    noise: Tensor
    method: str
    options: dict[str, Any]
    seed: int
    cache: dict[Any, Any] = field(default_factory=dict)


Values = dict[str, Tensor]


def _name(p: float) -> str:
    return f"{p:g}"


def _road(batch: Batch, percentiles=(20, 40, 60, 80), noise=0.01, batch_size=64) -> Values:
    from ..metrics.road import road_outputs

    probs, predicted = road_outputs(
        batch.adapter,
        batch.x,
        batch.explanation.attribution,
        batch.target,
        percentiles,
        ("morf", "lerf"),
        noise,
        batch.seed,
        batch_size,
        "auto",
        None,
        batch.noise,
    )
    morf, lerf = probs[0, :, 0], probs[0, :, 1]
    out = {"road": ((lerf - morf) / 2).mean(-1)}
    correct = predicted[0, :, 0] == batch.target.view(-1, 1)
    for q, p in enumerate(percentiles):
        out[f"road_morf@{_name(p)}"] = morf[:, q]
        out[f"road_lerf@{_name(p)}"] = lerf[:, q]
        out[f"road_morf_accuracy@{_name(p)}"] = correct[:, q].float()
    return out


def _removal(batch: Batch, steps: int, fill: str, noise: float, batch_size: int) -> Any:
    from ..metrics.deletion_insertion import deletion_insertion_curves

    key = ("removal", steps, fill, noise, batch_size)
    if key not in batch.cache:
        batch.cache[key] = deletion_insertion_curves(
            batch.adapter,
            batch.x,
            batch.explanation.attribution,
            batch.target,
            steps=steps,
            fill=fill,
            noise=noise,
            seed=batch.seed,
            noise_field=batch.noise,
            batch_size=batch_size,
        )
    return batch.cache[key]


def _deletion(batch: Batch, steps=20, fill="imputation", noise=0.01, batch_size=64) -> Values:
    return {"deletion_auc": _removal(batch, steps, fill, noise, batch_size).deletion_auc}


def _insertion(batch: Batch, steps=20, fill="imputation", noise=0.01, batch_size=64) -> Values:
    return {"insertion_auc": _removal(batch, steps, fill, noise, batch_size).insertion_auc}


def _masks(batch: Batch, metric: str) -> Tensor:
    if batch.masks is None:
        raise InputError(f"metric {metric!r} needs object masks: give masks= or data that yields them")
    return batch.masks


def _pointing(batch: Batch, tolerance=0) -> Values:
    from ..metrics.pointing import pointing_game

    return {"pointing_game": pointing_game(batch.explanation, _masks(batch, "pointing_game"), tolerance)}


def _energy(batch: Batch, absolute=False) -> Values:
    from ..metrics.pointing import energy_pointing_game

    masks = _masks(batch, "energy_pointing_game")
    return {"energy_pointing_game": energy_pointing_game(batch.explanation, masks, absolute)}


def _alignment(batch: Batch, patch=8, centre=True) -> Values:
    from ..metrics.alignment import input_alignment

    patch = min(patch, *batch.x.shape[-2:])
    result = input_alignment(batch.explanation, batch.x, patch=patch, centre=centre, null_samples=1)
    return {"input_alignment": result.cosine, "input_alignment_local": result.local}


def _sufficiency(batch: Batch, ks=(5, 10, 20, 30, 50), baseline="zero") -> Values:
    from ..metrics.sufficiency import sufficiency

    result = sufficiency(
        batch.adapter, batch.x, batch.explanation, batch.target, ks=ks, baseline=baseline, controls=False
    )
    return {
        "sufficiency": result.map.survived.double().mean(1),
        "sufficiency_ratio": result.map.ratio.mean(1),
    }


def _sanity(
    batch: Batch,
    mode="cascading",
    granularity="block",
    similarity=("spearman_abs", "ssim"),
    reset_bn_stats=False,
) -> Values:
    from ..explain import explain
    from ..metrics.similarity import compare
    from ..sanity import sweep

    out: Values = {}
    for entry, params in sweep(batch.adapter, mode, granularity, batch.seed, reset_bn_stats):
        if entry is None:
            continue
        with batch.adapter.using_params(params):
            randomized = explain(batch.adapter, batch.x, batch.target, batch.method, **batch.options)
        for metric, values in compare(batch.explanation, randomized, similarity).items():
            out[f"sanity_{metric}@{entry.index}"] = values
    return out


#: name → (function, default options)
METRICS: dict[str, tuple[Callable[..., Values], dict[str, Any]]] = {
    "road": (_road, {"percentiles": (20, 40, 60, 80), "noise": 0.01, "batch_size": 64}),
    "deletion": (_deletion, {"steps": 20, "fill": "imputation", "noise": 0.01, "batch_size": 64}),
    "insertion": (_insertion, {"steps": 20, "fill": "imputation", "noise": 0.01, "batch_size": 64}),
    "pointing_game": (_pointing, {"tolerance": 0}),
    "energy_pointing_game": (_energy, {"absolute": False}),
    "input_alignment": (_alignment, {"patch": 8, "centre": True}),
    "sufficiency": (_sufficiency, {"ks": (5, 10, 20, 30, 50), "baseline": "zero"}),
    "sanity": (
        _sanity,
        {
            "mode": "cascading",
            "granularity": "block",
            "similarity": ("spearman_abs", "ssim"),
            "reset_bn_stats": False,
        },
    ),
}
NEEDS_MASKS = ("pointing_game", "energy_pointing_game")

#: row name (before ``@``) → True when higher values mean a better (more faithful, better localised) map
HIGHER_IS_BETTER: dict[str, bool] = {
    "road": True,
    "road_morf": False,
    "road_lerf": True,
    "road_morf_accuracy": False,
    "deletion_auc": False,
    "insertion_auc": True,
    "pointing_game": True,
    "energy_pointing_game": True,
    "input_alignment": False,
    "input_alignment_local": False,
    "sufficiency": True,
    "sufficiency_ratio": True,
}


def higher_is_better(row: str) -> bool:
    """Direction of a row name (``sanity_*``: lower, a map should change when the model is randomized)."""
    base = row.split("@")[0]
    return HIGHER_IS_BETTER.get(base, not base.startswith("sanity_"))


def metric_specs(metrics: Any) -> dict[str, dict[str, Any]]:
    """Metrics as ``{name: full options}`` (defaults filled in, so a shard key names every option)."""
    if isinstance(metrics, str):
        metrics = [metrics]
    given = (
        {name: dict(options or {}) for name, options in metrics.items()}
        if isinstance(metrics, Mapping)
        else {name: {} for name in metrics}
    )
    if not given:
        raise MethodError("give at least one metric")
    specs = {}
    for name, options in given.items():
        if name not in METRICS:
            raise MethodError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        defaults = METRICS[name][1]
        unknown = [k for k in options if k not in defaults]
        if unknown:
            raise MethodError(
                f"metric {name!r} does not accept option(s) {', '.join(unknown)}; accepted: {', '.join(defaults)}"
            )
        specs[name] = {**defaults, **options}
    return specs


def compute(name: str, batch: Batch, options: dict[str, Any]) -> Values:
    """The per-image values of metric ``name`` (float64 on the CPU)."""
    values = METRICS[name][0](batch, **options)
    return {row: v.detach().double().cpu() for row, v in values.items()}


def bootstrap(
    values: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN for fewer than two values)."""
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarize(table: pd.DataFrame, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per method and row name: mean, 95% bootstrap interval (``ci_low``, ``ci_high``), images, direction."""
    ok = table[table["error"].isna() & table["metric"].notna()]
    rows = []
    for (method, metric), group in ok.groupby(["method", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=np.float64)
        low, high = bootstrap(values, resamples, level, seed)
        rows.append(
            {
                "method": method,
                "metric": metric,
                "mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "n": int(np.isfinite(values).sum()),
                "higher_is_better": higher_is_better(metric),
            }
        )
    columns = ["method", "metric", "mean", "ci_low", "ci_high", "n", "higher_is_better"]
    return pd.DataFrame(rows, columns=columns)
