"""AttributionExplorer without a browser: linked state, cache, latest-wins, cancel, errors, model kinds."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from xai_widgets import InputError, ModelAdapter, as_adapter, explain, register_method, unregister_method
from xai_widgets import methods as registered_methods
from xai_widgets.images import gallery
from xai_widgets.widgets import AttributionExplorer


def picture(seed: int, size: int = 24) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def shown_map(explorer: AttributionExplorer, method: str) -> np.ndarray:
    return explorer.views[method].map


@pytest.fixture
def custom_methods():
    """Register test methods (a counter, a failure, a slow cancellable one) and remove them afterwards."""
    calls: list[int] = []
    release = threading.Event()
    started = threading.Event()

    def counted(adapter, x, target):
        calls.append(int(target[0]))
        return x

    def broken(adapter, x, target):
        raise RuntimeError("this method always fails")

    def slow(adapter, x, target, progress=None):
        started.set()
        step = 0
        while not release.wait(0.01):
            step += 1
            progress(step, 1000)
        return x

    names = {"test_counted": counted, "test_broken": broken, "test_slow": slow}
    for name, fn in names.items():
        register_method(name, fn, cost="cheap")
    yield calls, release, started
    release.set()
    for name in names:
        unregister_method(name)


def test_one_view_per_method_showing_the_engine_result(small_cnn, guard):
    image = picture(0)
    with guard(small_cnn):
        explorer = AttributionExplorer(small_cnn, image, methods=["saliency", "gradcam"], background=False)
    assert list(explorer.views) == ["saliency", "gradcam"]
    adapter = as_adapter(small_cnn)
    for method in ("saliency", "gradcam"):
        want = explain(adapter, image[None], None, method).attribution[0].numpy()
        np.testing.assert_allclose(shown_map(explorer, method), want, atol=np.abs(want).max() * 1e-3)
    predicted = int(small_cnn(image[None]).argmax())
    assert explorer.predicted == predicted and explorer.views["saliency"].title.endswith(f"class {predicted}")
    assert explorer.views["gradcam"].title.startswith("gradcam @ features")
    assert explorer.views["saliency"].image_shape == [24, 24]


def test_predictions_chart_shows_the_top_k_and_a_bar_sets_the_target(small_cnn):
    explorer = AttributionExplorer(small_cnn, picture(1), methods=["saliency"], top_k=3, background=False)
    probabilities = torch.softmax(small_cnn(picture(1)[None])[0], 0)
    order = torch.argsort(probabilities, descending=True)[:3].tolist()
    assert list(explorer.bars.x) == [f"class {i}" for i in order]
    np.testing.assert_allclose(explorer.bars.y, probabilities[order].detach().numpy(), rtol=1e-5)
    assert list(explorer.bars.selected) == [0] and explorer.state.target is None
    assert explorer.target_select.value == -1  # "predicted class"
    explorer.bars.selected = [2]
    assert explorer.state.target == order[2] and explorer.target_select.value == order[2]
    want = explain(small_cnn, picture(1)[None], order[2], "saliency").attribution[0].numpy()
    np.testing.assert_allclose(shown_map(explorer, "saliency"), want, atol=np.abs(want).max() * 1e-3)
    explorer.target_select.value = order[1]
    assert list(explorer.bars.selected) == [1]
    explorer.target_select.value = -1
    assert explorer.state.target is None and list(explorer.bars.selected) == [0]


def test_layer_control_only_for_layer_methods(small_cnn):
    explorer = AttributionExplorer(small_cnn, picture(2), methods=["saliency"], background=False)
    # the menu never appears or disappears (no layout jump): disabled while no chosen method uses a layer
    assert explorer.layer_select.disabled and explorer.layer_select.layout.display is None
    explorer.method_select.value = ("saliency", "gradcam")
    assert not explorer.layer_select.disabled and explorer.layer_select.layout.display is None
    assert explorer.layer_select.label == "default CAM layer" and explorer.state.layer is None
    assert "features.0" in [value for _, value in explorer.layer_select.options]
    explorer.layer_select.value = "features.0"
    assert explorer.views["gradcam"].title.startswith("gradcam @ features.0")
    assert explorer.views["gradcam"].values_shape == [24, 24]
    explorer.state.layer = "features.2"  # controls follow the state too
    explorer.state.methods = ["gradcam"]
    assert explorer.layer_select.value == "features.2" and explorer.method_select.value == ("gradcam",)
    assert explorer.views["gradcam"].title.startswith("gradcam @ features.2")


def test_going_back_is_served_from_the_cache(small_cnn, custom_methods):
    calls, _, _ = custom_methods
    explorer = AttributionExplorer(
        small_cnn, picture(3), methods=["test_counted"], target=0, background=False
    )
    explorer.state.target = 1
    explorer.state.target = 0
    assert calls == [0, 1]
    assert explorer.views["test_counted"].title.endswith("class 0")


def test_errors_show_in_the_view_and_the_explorer_stays_usable(small_cnn, custom_methods):
    explorer = AttributionExplorer(
        small_cnn, picture(4), methods=["test_broken", "saliency"], background=False
    )
    assert explorer.views["test_broken"].error == "RuntimeError: this method always fails"
    assert explorer.views["saliency"].error == "" and explorer.views["saliency"].map is not None
    explorer.state.methods = ["saliency"]
    explorer.state.target = 2
    assert explorer.views["saliency"].title.endswith("class 2")


def test_a_bad_image_shows_an_error_and_keeps_the_last_picture(small_cnn):
    explorer = AttributionExplorer(small_cnn, picture(5), methods=["saliency"], background=False)
    before = explorer.state.image_hash
    with pytest.raises(InputError):
        explorer.set_image(torch.full((3, 8, 8), float("nan")), "nan image")
    assert "NaN" in explorer.message.value and "nan image" in explorer.message.value
    assert explorer.state.image_hash == before
    explorer._on_upload({"new": ({"name": "bad.png", "content": memoryview(b"garbage")},)})
    assert "not an image" in explorer.message.value
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(buffer, format="PNG")
    explorer._on_upload({"new": ({"name": "grey.png", "content": memoryview(buffer.getvalue())},)})
    assert explorer.message.value == "" and explorer.state.image_name == "upload: grey.png"
    assert explorer.image_select.value == "upload: grey.png"
    assert np.asarray(explorer.views["saliency"].picture).max() == 200


def test_latest_request_wins_and_cancel_stops_long_work(small_cnn, custom_methods):
    _, release, started = custom_methods
    explorer = AttributionExplorer(small_cnn, picture(6), methods=["test_slow"], target=0)
    try:
        assert started.wait(10)
        view = explorer.views["test_slow"]
        explorer.wait(0.3)
        assert 0 < view.progress < 1 and view.status.endswith("/1000")
        explorer.cancel()
        assert explorer.wait(10)
        assert view.status.startswith("cancelled") and view.progress is None and view.map is None
        started.clear()
        explorer.state.target = 1
        assert started.wait(10)
        started.clear()
        explorer.state.target = 2  # supersedes the running request for target 1
        assert started.wait(10)  # the worker moved on: the request for target 1 was cancelled
        release.set()
        assert explorer.wait(10)
        assert view.title.endswith("class 2") and view.error == ""
        assert not explorer.runner.cached(
            ("explanation", "test_slow", None, 1, (), "", explorer.state.image_hash)
        )
    finally:
        explorer.runner.close()


def test_torchvision_model_with_cam_layer(resnet18, guard):
    with guard(resnet18):
        explorer = AttributionExplorer(
            resnet18,
            np.full((80, 80, 3), 128, np.uint8),
            methods=["gradcam"],
            input_size=(3, 64, 64),
            background=False,
        )
    view = explorer.views["gradcam"]
    assert view.error == "" and view.values_shape == [64, 64] and view.title.startswith("gradcam @ layer4")
    assert "layer4" in [value for _, value in explorer.layer_select.options]


def test_any_module_with_a_preprocessing_function(small_cnn):
    calls = []

    def preprocess(batch):
        calls.append(batch.shape)
        return (batch - 0.5) * 4

    image = picture(7)
    explorer = AttributionExplorer(
        small_cnn, image, methods=["saliency"], preprocess=preprocess, labels=list("abcde"), background=False
    )
    assert calls and explorer.bars.x[0].split(": ")[1] in "abcde"
    want = explain(small_cnn, (image[None] - 0.5) * 4, None, "saliency").attribution[0].numpy()
    np.testing.assert_allclose(shown_map(explorer, "saliency"), want, atol=np.abs(want).max() * 1e-3)
    with pytest.raises(InputError, match="already a ModelAdapter"):
        AttributionExplorer(as_adapter(small_cnn), image, labels=["x"])


def test_normalisation_follows_the_state(small_cnn):
    explorer = AttributionExplorer(small_cnn, picture(8), methods=["saliency"], background=False)
    explorer.state.normalization = "symmetric"
    assert explorer.views["saliency"].clip == "symmetric"


@pytest.mark.slow
def test_zoo_model_by_name():
    from xai_widgets import zoo

    if not (zoo.WEIGHTS_DIR / "shapes-resnet.pt").is_file():
        pytest.skip("the zoo's shapes-resnet weights are not built yet (python -m xai_widgets.zoo.train)")
    from xai_widgets.data.shapes import make_shapes

    explorer = AttributionExplorer(
        "shapes-resnet",
        make_shapes(1, size=64).images[0],
        options={"integrated_gradients": {"steps": 8}},
        background=False,
    )
    assert explorer.adapter.labels[0] == "circle"
    assert list(explorer.views) == ["saliency", "integrated_gradients", "gradcam"]
    assert all(view.error == "" and view.map is not None for view in explorer.views.values())


def test_a_model_that_cannot_take_the_default_size_gets_its_choices_from_the_first_picture(guard):
    """An MLP on 8×8 grey digits, no input_size: nothing runs at 3×224×224, so the classes and layers are
    filled once a picture arrives, at the picture's size; a wrong size afterwards shows its error."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    with guard(mlp):
        explorer = AttributionExplorer(mlp, methods=["saliency"], background=False)
        assert [value for _, value in explorer.target_select.options] == [-1]
        explorer.set_image(torch.rand(1, 8, 8), "digit")
    assert [value for _, value in explorer.target_select.options] == [-1, 0, 1, 2, 3]
    assert explorer.views["saliency"].error == ""
    assert shown_map(explorer, "saliency").shape == (8, 8)
    assert explorer.probabilities is not None and explorer.probabilities.shape == (4,)
    with pytest.raises(InputError, match="does not run on a 1×3×224×224 input"):
        _ = ModelAdapter(mlp).num_classes  # a new adapter, at the default size (as_adapter reuses the first)


def test_a_bar_under_a_pixel_is_clickable_through_its_column_and_the_axis_follows_the_data(small_cnn):
    explorer = AttributionExplorer(small_cnn, picture(1), methods=["saliency"], top_k=4, background=False)
    heights = list(explorer.bars.y)
    assert explorer.bars.scales["y"].max is None  # scaled to the data, not a fixed 0–1
    assert (
        list(explorer.hit_bars.x) == list(explorer.bars.x) and list(explorer.hit_bars.y) == [max(heights)] * 4
    )
    explorer.hit_bars.selected = [3]  # a click on the faint column above the last (smallest) bar
    assert explorer.state.target == explorer._ordered[3] and list(explorer.bars.selected) == [3]
    assert explorer.hit_bars.selected is None  # ready for the next click


def test_the_method_list_shows_its_choice_on_top(small_cnn):
    explorer = AttributionExplorer(small_cnn, picture(1), methods=["gradcam", "saliency"], background=False)
    assert list(explorer.method_select.options[:2]) == ["gradcam", "saliency"]
    last = explorer.method_select.options[-1]
    explorer.state.methods = [last]  # chosen from code (a workbench, a script): brought into sight
    assert explorer.method_select.options[0] == last and explorer.method_select.value == (last,)
    assert sorted(explorer.method_select.options) == sorted(info.name for info in registered_methods())


def test_the_gallery_is_usable_wherever_an_image_is(small_cnn):
    explorer = AttributionExplorer(small_cnn, gallery(), methods=["saliency"], size=64, background=False)
    assert list(explorer.image_select.options) == ["astronaut", "chelsea", "coffee", "rocket"]
    assert explorer.message.value == "" and explorer.views["saliency"].map is not None
    explorer.image_select.value = "chelsea"
    by_name = AttributionExplorer(small_cnn, "chelsea", methods=["saliency"], background=False)
    assert torch.equal(by_name.state.picture, explorer.state.picture)


def test_a_degenerate_map_says_so_under_the_map(small_cnn):
    """A CAM at a 1×1 layer (the global pool) is one number spread over the picture: the view shows why."""
    explorer = AttributionExplorer(small_cnn, picture(3), methods=["hirescam", "saliency"], background=False)
    assert explorer.views["hirescam"].status == "" and explorer.views["saliency"].status == ""
    explorer.state.layer = "pool"
    assert explorer.views["hirescam"].status == "⚠ degenerate map: constant"
    explorer.state.layer = "features.5"
    assert explorer.views["hirescam"].status == ""
