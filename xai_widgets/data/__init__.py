"""Data that ships with the package or is generated on the spot: synthetic shapes and real handwritten digits."""

from .digits import Digits, load_digits
from .shapes import SHAPE_CLASSES, ShapesBatch, make_shapes
from .tabular import Table, load_breast_cancer

__all__ = [
    "SHAPE_CLASSES",
    "Digits",
    "ShapesBatch",
    "Table",
    "load_breast_cancer",
    "load_digits",
    "make_shapes",
]
