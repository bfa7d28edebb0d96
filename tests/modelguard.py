"""Test helpers shared across folders: the 'model unchanged' check and a small CNN with in-place ReLUs.

(A module of its own, not conftest.py: several conftest.py files exist, so ``from conftest import`` is ambiguous.)
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def model_state(model: nn.Module) -> dict:
    """Everything about a module that a method must leave exactly as it found it."""
    state = {
        "params": {k: (v.detach().clone(), v.requires_grad, v.grad) for k, v in model.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
        "modules": {},
    }
    for name, module in model.named_modules():
        hooks = {
            attr: dict(getattr(module, attr))
            for attr in dir(module)
            if attr.startswith("_") and "hooks" in attr and isinstance(getattr(module, attr, None), dict)
        }
        flags = {k: v for k, v in vars(module).items() if isinstance(v, (bool, int, float, str)) or v is None}
        state["modules"][name] = (type(module), module.training, hooks, flags, sorted(vars(module)))
    return state


def assert_same_state(before: dict, after: dict) -> None:
    assert before["params"].keys() == after["params"].keys()
    for key, (value, requires_grad, grad) in before["params"].items():
        value2, requires_grad2, grad2 = after["params"][key]
        assert torch.equal(value, value2), f"parameter {key} changed"
        assert requires_grad == requires_grad2, f"requires_grad of {key} changed"
        assert (grad is None) == (grad2 is None), f".grad of {key} changed"
    assert before["buffers"].keys() == after["buffers"].keys()
    for key, value in before["buffers"].items():
        assert torch.equal(value, after["buffers"][key]), f"buffer {key} changed"
    assert before["modules"] == after["modules"], "module flags, hooks or attributes changed"


@contextlib.contextmanager
def unchanged(model: nn.Module):
    """Assert that the block leaves ``model`` exactly as before, also when the block raises."""
    before = model_state(model)
    try:
        yield
    finally:
        assert_same_state(before, model_state(model))


class SmallCNN(nn.Module):
    """conv/ReLU(inplace)/pool stack with a GAP + linear head: small, with the in-place hazards."""

    def __init__(self, classes: int = 5, channels: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, bias=bias),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1, bias=bias),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes, bias=bias)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def explain_leaves_models_unchanged(method: str, *models: nn.Module) -> None:
    """``method`` on each model (1×3×32×32, class 1) gives a finite map, a bad class raises TargetError, and
    neither call changes the model."""
    import pytest

    import xai_widgets as xw

    x = torch.randn(1, 3, 32, 32)
    for model in models:
        with unchanged(model):
            e = xw.explain(model, x, 1, method)
            with pytest.raises(xw.TargetError):
                xw.explain(model, x, 99, method)
        assert e.method == method and torch.isfinite(e.pixel).all()
