"""Activation Spectroscopy (Reing, Ver Steeg and Galstyan, arXiv 2501.15435): Fourier spectra of a layer's units.

``fourier`` transforms any pseudo-Boolean function (exactly, or by a heavy-coefficient search);
``spectroscopy`` builds that function from a model's layer and returns its :class:`Spectrum`.
"""

from .fourier import Spectrum, cube_points, fourier, walsh_hadamard
from .spectroscopy import FUNCTIONS, compare, select_units, spectroscopy, switched, unit_maps, unit_relevance

__all__ = [
    "FUNCTIONS",
    "Spectrum",
    "compare",
    "cube_points",
    "fourier",
    "select_units",
    "spectroscopy",
    "switched",
    "unit_maps",
    "unit_relevance",
    "walsh_hadamard",
]
