"""Jupyter widgets: views on the engine (``xai_widgets.explain`` and friends), never the other way round.

Shared pieces for every widget of the package:
- :class:`HeatmapView` (``heatmap.py``): picture + map on a canvas; colormap, opacity, clipping and readout
  in the browser; binary transport; ``to_png``.
- :class:`ExplanationState` (``state.py``): the linked traitlets state (model, image, target, methods, layer,
  randomization, normalisation) with cache keys and ``explain``.
- :class:`JobRunner` (``jobs.py``): background jobs with a keyed cache, latest-request-wins channels,
  progress and cancel through ``xai_widgets.Cancelled``.
"""

from .explorer import AttributionExplorer
from .heatmap import COLORMAPS, HeatmapView
from .jobs import Job, JobRunner, describe_error
from .state import ExplanationState, read_picture

__all__ = [
    "COLORMAPS",
    "AttributionExplorer",
    "ExplanationState",
    "HeatmapView",
    "Job",
    "JobRunner",
    "describe_error",
    "read_picture",
]
