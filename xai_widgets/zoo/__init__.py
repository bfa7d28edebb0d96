"""The model zoo: small models trained by this package, shipped with it, ready offline.

``load(name)`` returns a ModelAdapter (eval mode, on the best device, with the preprocessing, labels and
input size the model was trained with); ``info(name)`` tells how it was trained and how well it does;
``names()`` lists them. Weights live in ``xai_widgets/zoo/weights`` as float16 state dicts and are read with
``torch.load(..., weights_only=True)``; ``python -m xai_widgets.zoo.train NAME`` reproduces each one.

Example:
    >>> from xai_widgets import zoo
    >>> adapter = zoo.load("shapes-resnet", device="cpu")
    >>> adapter.labels
    ['circle', 'square', 'triangle', 'star', 'cross', 'ring']
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..errors import XAIError
from ..model import ModelAdapter
from .models import ARCHITECTURES

WEIGHTS_DIR = Path(__file__).with_name("weights")

__all__ = ["best_device", "info", "load", "names"]


def names() -> list[str]:
    """Names of the shipped models."""
    return list(ARCHITECTURES)


def _check(name: str) -> str:
    if name not in ARCHITECTURES:
        raise XAIError(f"unknown zoo model {name!r}; known: {', '.join(ARCHITECTURES)}")
    return name


@cache
def _metadata(name: str) -> dict[str, Any]:
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise XAIError(
            f"the metadata of zoo model {name!r} is missing ({path}); "
            f"rebuild it with: python -m xai_widgets.zoo.train {name}"
        )
    return json.loads(path.read_text())


def info(name: str) -> dict[str, Any]:
    """How ``name`` was trained and how well it does: accuracy (and on which test set), seed, training
    settings, architecture, parameter count, preprocessing."""
    return json.loads(json.dumps(_metadata(_check(name))))


def best_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(name: str, device: str | torch.device | None = None) -> ModelAdapter:
    """A ready ModelAdapter for zoo model ``name``: eval mode, on ``device`` (default: the best one),
    with its mean/std preprocessing, class labels, input size and ``info``."""
    meta = _metadata(_check(name))
    device = best_device() if device is None else torch.device(device)
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        raise XAIError(
            f"the weights of zoo model {name!r} are missing ({path}); "
            f"rebuild them with: python -m xai_widgets.zoo.train {name}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = ARCHITECTURES[name]()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model = model.to(device).eval()
    return ModelAdapter(
        model,
        mean=meta["mean"],
        std=meta["std"],
        labels=meta["labels"],
        input_size=tuple(meta["input_size"]),
        name=name,
        info=info(name),
        feature_names=meta.get("feature_names"),
    )
