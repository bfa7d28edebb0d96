"""The synthetic shapes generator: deterministic, balanced, masks that are the object, any size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xai_widgets import InputError
from xai_widgets.data import SHAPE_CLASSES, ShapesBatch, make_shapes


@pytest.fixture(scope="module")
def batch() -> ShapesBatch:
    return make_shapes(120, seed=5)


def test_shapes_and_dtypes(batch):
    assert len(SHAPE_CLASSES) >= 6
    assert {"circle", "square", "triangle", "star", "cross", "ring"} <= set(SHAPE_CLASSES)
    assert batch.images.shape == (120, 3, 64, 64) and batch.images.dtype == torch.float32
    assert batch.labels.shape == (120,) and batch.labels.dtype == torch.long
    assert batch.masks.shape == (120, 64, 64) and batch.masks.dtype == torch.bool
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    assert batch.labels.min() >= 0 and batch.labels.max() < len(SHAPE_CLASSES)


def test_same_seed_same_images_other_seed_other_images(batch):
    again = make_shapes(120, seed=5)
    assert torch.equal(again.images, batch.images)
    assert torch.equal(again.labels, batch.labels)
    assert torch.equal(again.masks, batch.masks)
    other = make_shapes(120, seed=6)
    assert not torch.equal(other.images, batch.images)


def test_classes_are_balanced(batch):
    counts = torch.bincount(batch.labels, minlength=len(SHAPE_CLASSES))
    assert counts.tolist() == [120 // len(SHAPE_CLASSES)] * len(SHAPE_CLASSES)
    odd = torch.bincount(make_shapes(13, seed=0).labels, minlength=len(SHAPE_CLASSES))
    assert odd.max() - odd.min() <= 1


def test_mask_is_one_object_of_plausible_area(batch):
    area = batch.masks.flatten(1).float().mean(1)
    assert (area > 0.01).all() and (area < 0.35).all()
    # the object touches no border (it fits the picture whole)
    border = (
        batch.masks[:, 0].any(1)
        | batch.masks[:, -1].any(1)
        | batch.masks[:, :, 0].any(1)
        | batch.masks[:, :, -1].any(1)
    )
    assert not border.any()


def test_mask_covers_the_object(batch):
    """Inside the mask the picture is the object's colour (shading and noise aside): far less colour spread
    than across the mask's outline, where background and object meet."""
    images, masks = batch.images, batch.masks.unsqueeze(1).float()
    inner = (-F.max_pool2d(-masks, 3, 1, 1)) > 0  # eroded mask: object pixels away from the edge
    ring = (F.max_pool2d(masks, 5, 1, 2) > 0) & ~(masks > 0)  # background just outside the object
    for i in range(len(images)):
        obj = images[i][:, inner[i, 0]]
        if obj.shape[1] < 5:
            continue
        spread = (obj - obj.median(dim=1, keepdim=True).values).abs().mean()
        outside = images[i][:, ring[i, 0]].mean(1)
        contrast = (outside - obj.median(dim=1).values).norm()
        assert spread < 0.1
        assert contrast > 2 * spread


def test_ring_has_a_hole_and_circle_does_not(batch):
    for label, hole in ((SHAPE_CLASSES.index("ring"), True), (SHAPE_CLASSES.index("circle"), False)):
        for mask in batch.masks[batch.labels == label]:
            ys, xs = torch.nonzero(mask, as_tuple=True)
            centre = mask[int(ys.float().mean().round()), int(xs.float().mean().round())]
            assert bool(centre) is not hole


@pytest.mark.parametrize("size", [16, 37, 128])
def test_any_size(size):
    batch = make_shapes(12, size=size, seed=1)
    assert batch.images.shape == (12, 3, size, size)
    assert batch.masks.shape == (12, size, size)
    assert (batch.masks.flatten(1).sum(1) > 0).all()
    # the same draw at another size: same labels, a mask of the same relative area
    small = make_shapes(12, size=64, seed=1)
    assert torch.equal(small.labels, batch.labels)
    rel = batch.masks.flatten(1).float().mean(1) - small.masks.flatten(1).float().mean(1)
    assert rel.abs().max() < 0.06


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"n": 2.5}, {"n": 4, "size": 8}, {"n": 4, "seed": "a"}])
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        make_shapes(**kwargs)


def test_empty_batch():
    batch = make_shapes(0)
    assert batch.images.shape == (0, 3, 64, 64) and batch.labels.shape == (0,)
