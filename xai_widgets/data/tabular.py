"""Tabular data for feature-vector models: scikit-learn's bundled Wisconsin breast-cancer table (offline).

569 tumours, 30 real-valued features (mean, standard error and worst value of ten nucleus measurements), two
classes (malignant, benign). The split is fixed: a stratified 25% test set drawn with seed 0, so the zoo's
``tabular-mlp`` accuracy refers to the same 143 rows everywhere. scikit-learn is imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import XAIError

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass
class Table:
    """Raw (unnormalised) features N×D, labels N, and the names of the features and classes."""

    features: Tensor
    labels: Tensor
    feature_names: list[str]
    classes: list[str]


def load_breast_cancer(split: str = "test") -> Table:
    """The ``train`` (426 rows) or ``test`` (143 rows) part of the breast-cancer table, or ``all`` (569)."""
    if split not in ("train", "test", "all"):
        raise XAIError(f"split must be 'train', 'test' or 'all', got {split!r}")
    try:
        from sklearn.datasets import load_breast_cancer as sklearn_load
        from sklearn.model_selection import train_test_split
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise XAIError(
            "the breast-cancer table needs scikit-learn: pip install 'xai_widgets[tabular]'"
        ) from error
    data = sklearn_load()
    features = torch.tensor(data.data, dtype=torch.float32)
    labels = torch.tensor(data.target, dtype=torch.long)
    names, classes = [str(n) for n in data.feature_names], [str(c) for c in data.target_names]
    if split == "all":
        return Table(features, labels, names, classes)
    train, test = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=labels.numpy(),
    )
    rows = torch.as_tensor(train if split == "train" else test)
    return Table(features[rows], labels[rows], names, classes)
