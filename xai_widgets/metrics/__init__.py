"""Metrics on explanations: similarity (sanity checks), input alignment, key information sufficiency,
deletion/insertion curves and the (energy-based) pointing game."""

from .alignment import Alignment, input_alignment
from .deletion_insertion import RemovalCurves, deletion_insertion_curves
from .pointing import energy_pointing_game, pointing_game
from .similarity import abs_map, compare, hog_similarity, rank, signed_map, spearman, ssim
from .sufficiency import Curve, Sufficiency, edge_map, sufficiency

__all__ = [
    "Alignment",
    "Curve",
    "RemovalCurves",
    "Sufficiency",
    "abs_map",
    "compare",
    "deletion_insertion_curves",
    "edge_map",
    "energy_pointing_game",
    "hog_similarity",
    "input_alignment",
    "pointing_game",
    "rank",
    "signed_map",
    "spearman",
    "ssim",
    "sufficiency",
]
