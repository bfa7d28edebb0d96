"""The shipped models do what the zoo promises: accuracy on data they never saw, and Grad-CAM that points
at the object (the pointing game, Zhang et al. 2018) where the same architecture with random weights does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import xai_widgets as xw
from xai_widgets import ModelAdapter, zoo
from xai_widgets.data import ShapesBatch, make_shapes
from xai_widgets.data.digits import load_digits
from xai_widgets.zoo.models import ARCHITECTURES
from xai_widgets.zoo.train import SHAPES_TRAIN_SEED

# seeds far below the training seeds (SHAPES_TRAIN_SEED + epoch) and different from the one in info()
ACCURACY_SEED, POINTING_SEED = 2, 3


@pytest.fixture(scope="module")
def accuracy_set() -> ShapesBatch:
    assert ACCURACY_SEED < SHAPES_TRAIN_SEED - 1
    return make_shapes(1000, seed=ACCURACY_SEED)


@pytest.fixture(scope="module")
def pointing_set() -> ShapesBatch:
    return make_shapes(200, seed=POINTING_SEED)


def accuracy(adapter: ModelAdapter, images: torch.Tensor, labels: torch.Tensor) -> float:
    logits = adapter.logits(adapter.preprocess(images))
    return (logits.argmax(1).cpu() == labels).float().mean().item()


@pytest.mark.parametrize("name", ["shapes-vgg", "shapes-resnet", "shapes-leaky"])
def test_shapes_accuracy_on_fresh_images(accuracy_set, name):
    adapter = zoo.load(name, device="cpu")
    assert accuracy(adapter, accuracy_set.images, accuracy_set.labels) >= 0.97


@pytest.mark.parametrize("name", ["mnist-mlp-d0", "mnist-mlp-d20", "mnist-mlp-d50"])
def test_digits_accuracy_on_held_out_digits(name):
    test = load_digits("mnist", size=14, split="test")
    adapter = zoo.load(name, device="cpu")
    measured = accuracy(adapter, test.images, test.labels)
    assert measured >= 0.95
    # info() reports exactly this number: it was measured on the same held-out digits
    assert measured == pytest.approx(zoo.info(name)["accuracy"], abs=1e-3)


def pointing_rate(adapter: ModelAdapter, batch: ShapesBatch) -> float:
    """Share of images whose Grad-CAM maximum (default CAM layer, upsampled to the input) lies on the object's
    mask dilated by 2 px. An all-zero map points at pixel 0, which the object never covers."""
    x = adapter.preprocess(batch.images)
    explanation = xw.explain(adapter, x, batch.labels, "gradcam")
    assert explanation.layer == adapter.default_cam_layer().name
    peak = explanation.attribution.flatten(1).argmax(1).cpu()
    dilated = F.max_pool2d(batch.masks.float().unsqueeze(1), 5, stride=1, padding=2).squeeze(1) > 0
    return dilated.flatten(1).gather(1, peak.unsqueeze(1)).float().mean().item()


@pytest.mark.parametrize("name", ["shapes-vgg", "shapes-resnet"])
def test_gradcam_points_at_the_object_only_when_trained(pointing_set, guard, name):
    trained = zoo.load(name, device="cpu")
    with guard(trained.model):
        hits = pointing_rate(trained, pointing_set)
    torch.manual_seed(0)
    random = ModelAdapter(
        ARCHITECTURES[name]().eval(),
        mean=trained.mean,
        std=trained.std,
        labels=trained.labels,
        input_size=trained.input_size,
    )
    chance = pointing_rate(random, pointing_set)
    area = (F.max_pool2d(pointing_set.masks.float().unsqueeze(1), 5, 1, 2) > 0).float().mean().item()
    assert hits >= 0.90, f"trained {name}: Grad-CAM on the object in {hits:.0%} of images"
    assert chance <= 0.60, f"random {name}: Grad-CAM on the object in {chance:.0%} of images"
    assert hits - chance >= 0.3
    assert area < 0.25  # the object is a small part of the picture: hitting it is not free
