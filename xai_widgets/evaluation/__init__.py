"""Dataset-scale evaluation: methods × metrics over thousands of images, in-process, on Dask or on Ray.

``evaluate(model, data, methods, metrics, executor=..., out=...)`` returns an :class:`Evaluation` (a tidy
table and a summary with bootstrap intervals); shards stream to Parquet and a rerun resumes. See
``runner.py`` (the shard function), ``executors.py`` (in-process, Dask, Ray; the model as a spec),
``shards.py`` (data sources, shard keys, the store) and ``metrics_table.py`` (the metrics).
"""

from .executors import DaskExecutor, InProcessExecutor, ModelSpec, RayExecutor, fingerprint
from .metrics_table import METRICS, bootstrap, summarize
from .runner import Evaluation, TextProgress, evaluate

__all__ = [
    "METRICS",
    "DaskExecutor",
    "Evaluation",
    "InProcessExecutor",
    "ModelSpec",
    "RayExecutor",
    "TextProgress",
    "bootstrap",
    "evaluate",
    "fingerprint",
    "summarize",
]
