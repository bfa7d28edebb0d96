"""``explain`` for every registered method: the model is left as it was and no autograd graph outlives the call."""

import gc
import warnings

import pytest
import tiny_transformers
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
    if xw.get_method(method).family == "attention":  # needs self-attention: a tiny torchvision ViT
        models, x = {"vit": tiny_transformers.vit()}, torch.randn(1, 3, 32, 32)
    for name, model in models.items():
        if expensive and name == "resnet18":
            continue  # hundreds of forwards; the small CNN runs the same code
        before = live_graph_tensors()
        with unchanged(model):
            e = xw.explain(model, x, 1, method, **QUICK.get(method, {}))
        del e
        assert live_graph_tensors() == before, f"{method} left an autograd graph alive"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SmallCNN().eval()


def test_every_method_works_inside_no_grad_and_inference_mode(tiny):
    """Users call explain inside these blocks; gradients are enabled for the call, an input made under
    inference mode is copied, and the result equals the one outside the block."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 16, 16)
    for info in xw.methods():
        options = QUICK.get(info.name, {})
        try:
            want = xw.explain(tiny, x, 1, info.name, **options)
        except xw.UnsupportedModelError:  # a method for other architectures (attention rollout on a CNN)
            continue
        for context in (torch.no_grad, torch.inference_mode):
            with unchanged(tiny), context():
                inside = x.clone()  # an inference tensor under inference_mode
                got = xw.explain(tiny, inside, torch.tensor([1]), info.name, **options)
            torch.testing.assert_close(got.attribution, want.attribution, msg=f"{info.name} in {context}")
    with torch.no_grad():
        film = xw.camanim(tiny, x, 1)
    with torch.inference_mode():
        road = film.road(percentiles=(50,))
    assert torch.isfinite(road.score).all()


def test_the_other_entry_points_work_inside_inference_mode(tiny):
    """Sanity checks, ActSpec and the metrics that run the model enable gradients the same way."""
    from xai_widgets import actspec, metrics, sanity

    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    want = sanity.randomization_test(tiny, x, [1, 2], methods="saliency", metrics=("spearman",))
    with unchanged(tiny), torch.inference_mode():
        inside = x.clone()
        table = sanity.randomization_test(tiny, inside, [1, 2], methods="saliency", metrics=("spearman",))
        spectrum = actspec.spectroscopy(tiny, "features.6", [0, 1, 2], inputs=inside, target=1)
        e = xw.explain(tiny, inside, [1, 2], "input_x_gradient")
        alignment = metrics.input_alignment(e, inside, tiny, [1, 2])
        kept = metrics.sufficiency(tiny, inside, e, [1, 2], ks=(50,))
    assert table.equals(want)
    assert len(spectrum.order_weights()) > 0 and alignment is not None and kept is not None
