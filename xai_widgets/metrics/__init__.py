"""Metrics on explanations: similarity (sanity checks), input alignment and key information sufficiency."""

from .alignment import Alignment, input_alignment
from .similarity import abs_map, compare, hog_similarity, rank, signed_map, spearman, ssim
from .sufficiency import Curve, Sufficiency, edge_map, sufficiency

__all__ = [
    "Alignment",
    "Curve",
    "Sufficiency",
    "abs_map",
    "compare",
    "edge_map",
    "hog_similarity",
    "input_alignment",
    "rank",
    "signed_map",
    "spearman",
    "ssim",
    "sufficiency",
]
