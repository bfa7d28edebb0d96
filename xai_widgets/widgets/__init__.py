"""Jupyter widgets: views on the engine (``xai_widgets.explain`` and friends), never the other way round.

Shared pieces for every widget of the package:
- :class:`HeatmapView` (``heatmap.py``): picture + map on a canvas; colormap, opacity, clipping and readout
  in the browser; binary transport; ``to_png``.
- :class:`ExplanationState` (``state.py``): the linked traitlets state (model, image, target, methods, layer,
  randomization, normalisation) with cache keys and ``explain``.
- :class:`JobRunner` (``jobs.py``): background jobs with a keyed cache, latest-request-wins channels,
  progress and cancel through ``xai_widgets.Cancelled``.
"""

from ..colormaps import COLORMAPS
from .camanim_player import CAManimPlayer
from .explorer import AttributionExplorer
from .heatmap import HeatmapView
from .interaction_bars import InteractionBars
from .jobs import Job, JobRunner, describe_error
from .sanity_toggle import SanityToggle
from .state import ExplanationState, read_picture

__all__ = [
    "COLORMAPS",
    "AttributionExplorer",
    "CAManimPlayer",
    "ExplanationState",
    "HeatmapView",
    "InteractionBars",
    "Job",
    "JobRunner",
    "SanityToggle",
    "describe_error",
    "read_picture",
]
