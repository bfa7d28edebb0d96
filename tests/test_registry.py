"""The method registry: capabilities declared once on MethodInfo and used by explain, camanim and the widgets."""

import inspect

import pytest
import torch
from modelguard import SmallCNN

import xai_widgets as xw
from xai_widgets.all_layers import film_methods
from xai_widgets.registry import accepted_options


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallCNN().eval()


def test_capabilities_of_the_builtin_methods():
    info = {i.name: i for i in xw.methods()}
    assert info["integrated_gradients"].options == {
        "baseline",
        "steps",
        "batch_size",
        "quadrature",
        "progress",
    }
    assert info["integrated_gradients"].takes_progress and info["integrated_gradients"].takes_batch_size
    assert info["saliency"].options == frozenset() and not info["saliency"].takes_progress
    assert (
        info["scorecam"].takes_progress
        and info["scorecam"].every_layer
        and info["scorecam"].multi_layer is None
    )
    assert info["gradcam"].multi_layer is not None and info["eigencam"].multi_layer is not None
    assert not info["cam"].every_layer and not info["guided_gradcam"].every_layer
    assert [i.name for i in film_methods()][:7] == [
        "gradcam",
        "gradcam_pp",
        "xgradcam",
        "layercam",
        "hirescam",
        "eigencam",
        "scorecam",
    ]


def test_options_are_read_once_at_registration_not_per_call(model, monkeypatch):
    def signature(*args, **kwargs):
        raise AssertionError("inspect.signature called during a call")

    monkeypatch.setattr(inspect, "signature", signature)
    x = torch.randn(1, 3, 16, 16)
    assert xw.explain(model, x, 1, "integrated_gradients", steps=3).attribution.shape == (1, 16, 16)
    with pytest.raises(xw.MethodError, match="accepted: baseline, batch_size, progress, quadrature, steps"):
        xw.explain(model, x, 1, "integrated_gradients", n_steps=3)
    film = xw.camanim(model, x, 1, method="scorecam", progress=lambda done, total: None)
    assert len(film) == 4  # three convs and the features block


def test_accepted_options_of_user_functions():
    def plain(adapter, x, target, layer, scale: float = 1.0, *, progress=None):
        return x

    def anything(a, b, c, **options):
        return b

    assert accepted_options(plain) == {"scale", "progress"}
    assert accepted_options(anything) is None


def test_a_method_that_is_not_batched_runs_image_by_image(model):
    seen = []

    def one_at_a_time(adapter, x, target, power: int = 1):
        assert x.shape[0] == 1, "got a batch"
        seen.append(int(target[0]))
        return (x * (1 + int(target[0]))) ** power

    xw.register_method("one_at_a_time", one_at_a_time, batched=False)
    try:
        x = torch.randn(3, 3, 16, 16)
        e = xw.explain(model, x, [0, 1, 2], "one_at_a_time", power=1)
        with pytest.raises(xw.MethodError, match="accepted: power"):
            xw.explain(model, x, 0, "one_at_a_time", powr=2)
    finally:
        xw.unregister_method("one_at_a_time")
    assert seen == [0, 1, 2]
    torch.testing.assert_close(e.pixel, x * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1))
    assert e.score.shape == (3,) and e.target.tolist() == [0, 1, 2]


def test_registration_errors():
    with pytest.raises(xw.MethodError, match="layer methods"):
        xw.register_method("flat_film", lambda adapter, x, target: x, every_layer=True)
    with pytest.raises(xw.MethodError, match="multi_layer must be callable"):
        xw.register_method("bad_multi", lambda adapter, x, target, layer: x, needs_layer=True, multi_layer=3)
    assert "flat_film" not in [i.name for i in xw.methods()]
