"""Shared fixtures: small models and the 'model unchanged' guard used by every method's tests."""

from __future__ import annotations

import os

import pytest
import torch
from modelguard import SmallCNN, unchanged

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def guard():
    return unchanged


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="session")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()
