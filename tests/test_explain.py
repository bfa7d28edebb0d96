"""``explain`` for every registered method: the model is left as it was and no autograd graph outlives the call."""

import gc
import warnings

import pytest
import torch
import torchvision
from modelguard import SmallCNN, unchanged

import xai_widgets as xw

QUICK = {"smoothgrad": {"samples": 2}, "vargrad": {"samples": 2}, "integrated_gradients": {"steps": 4}}


def live_graph_tensors() -> int:
    """Python-visible tensors that still carry an autograd graph."""
    gc.collect()
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and obj.grad_fn is not None:
                count += 1
    return count


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"small_cnn": SmallCNN().eval(), "resnet18": torchvision.models.resnet18(num_classes=5).eval()}


@pytest.mark.parametrize("method", [info.name for info in xw.methods()])
def test_model_unchanged_and_no_autograd_graph_outlives_a_call(models, method):
    """A graph kept alive by a reference cycle through autograd nodes (which Python's collector cannot see)
    leaked the activations of every call: 75 MB per LRP call on VGG16 until the ledger cut its cycle."""
    x = torch.randn(1, 3, 64, 64)
    expensive = xw.get_method(method).cost == "expensive"
    for name, model in models.items():
        if expensive and name == "resnet18":
            continue  # hundreds of forwards; the small CNN runs the same code
        before = live_graph_tensors()
        with unchanged(model):
            e = xw.explain(model, x, 1, method, **QUICK.get(method, {}))
        del e
        assert live_graph_tensors() == before, f"{method} left an autograd graph alive"
