"""ExplanationState: reading pictures, fitting them to the model, cache keys and explaining."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xai_widgets import InputError, ModelAdapter, as_adapter, explain
from xai_widgets.images import load_image
from xai_widgets.widgets.heatmap import as_picture
from xai_widgets.widgets.state import ExplanationState, accepts_progress, fit_picture, read_picture


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_read_picture_accepts_every_usual_source(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    Image.fromarray(array).save(tmp_path / "p.png")
    sources = [
        array,
        Image.fromarray(array),
        tmp_path / "p.png",
        str(tmp_path / "p.png"),
        png_bytes(array),
        expected,
    ]
    for source in sources:
        torch.testing.assert_close(read_picture(source), expected)
    assert read_picture(np.zeros((4, 4))).shape == (1, 4, 4)
    # alpha is composited over white, as load_image does: fully transparent black is white
    assert torch.equal(read_picture(torch.zeros(1, 4, 4, 4)), torch.ones(3, 4, 4))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"not an image", "cannot read the image file bytes"),
        ("/no/such/file.png", "no image file"),
        (torch.full((3, 4, 4), 2.0), "normalised model input"),
        (torch.full((3, 4, 4), float("nan")), "NaN"),
        (np.zeros((4, 4, 2)), "2 channels"),
        (torch.zeros(3, 0, 4), "empty"),
        (42, "from int"),
    ],
)
def test_read_picture_refuses_bad_images_in_words(source, message):
    with pytest.raises(InputError, match=message):
        read_picture(source)


def test_fit_picture_converts_channels_and_crops_the_centre():
    picture = torch.arange(2 * 4 * 8, dtype=torch.float32).reshape(2, 4, 8)[:1].expand(3, 4, 8) / 64
    assert fit_picture(picture, 1, None).shape == (1, 4, 8)
    assert fit_picture(picture[:1], 3, None).shape == (3, 4, 8)
    fitted = fit_picture(picture, 3, (4, 4))
    torch.testing.assert_close(fitted, picture[:, :, 2:6])  # same scale: only the centre crop
    assert fit_picture(picture, 3, (2, 2)).shape == (3, 2, 2)
    with pytest.raises(InputError, match="expects 2 input channels"):
        fit_picture(picture, 2, None)


def rgba_file(path, height: int, width: int):
    """A non-square RGBA PNG with partial transparency: alpha, channels and the fit all matter."""
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.mark.parametrize("fit", ["crop", "stretch"])
def test_a_file_gives_bitwise_the_same_model_input_in_scripts_and_widgets(tmp_path, small_cnn, fit):
    path = rgba_file(tmp_path / "p.png", 37, 52)
    adapter = ModelAdapter(small_cnn, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), input_size=(3, 24, 24))
    state = ExplanationState(adapter, fit=fit)
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        state.set_image(source, "p")
        assert torch.equal(state.model_input(), load_image(path, adapter, fit=fit))
    assert np.array_equal(state.display_picture(), as_picture(load_image(path, size=(24, 24), fit=fit)))


def test_grey_models_get_bt601_luma_in_widgets_as_in_scripts(tmp_path):
    path = rgba_file(tmp_path / "p.png", 20, 30)
    adapter = ModelAdapter(nn.Sequential(nn.Flatten(), nn.Linear(144, 2)), input_size=(1, 12, 12))
    state = ExplanationState(adapter)
    state.set_image(path)
    assert state.picture.shape == (1, 12, 12)
    assert torch.equal(state.model_input(), load_image(path, adapter))


def test_changing_the_fit_refits_the_current_image(tmp_path, small_cnn):
    path = rgba_file(tmp_path / "p.png", 20, 40)
    adapter = ModelAdapter(small_cnn, input_size=(3, 16, 16))
    state = ExplanationState(adapter)
    state.set_image(path, "wide")
    cropped = state.picture
    state.fit = "stretch"
    assert not torch.equal(state.picture, cropped)
    assert torch.equal(state.model_input(), load_image(path, adapter, fit="stretch"))
    assert state.image_name == "wide"


def test_a_gallery_name_is_an_image_for_the_widgets(small_cnn):
    adapter = ModelAdapter(small_cnn, input_size=(3, 16, 16))
    state = ExplanationState(adapter)
    state.set_image("coffee", "coffee")
    assert torch.equal(state.model_input(), load_image("coffee", adapter))
    with pytest.raises(InputError, match="gallery name"):
        state.set_image("no-such-picture")


def test_keys_follow_every_choice(small_cnn):
    state = ExplanationState(as_adapter(small_cnn), methods=["saliency"])
    state.set_image(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), "a")
    key = state.key("saliency")
    assert state.key("saliency") == key
    assert state.key("input_x_gradient") != key
    changes = [("target", 1), ("randomization", "cascade-1"), ("options", {"saliency": {"x": 1}})]
    for name, value in changes:
        before = getattr(state, name)
        setattr(state, name, value)
        assert state.key("saliency") != key, name
        setattr(state, name, before)
    assert state.key("saliency") == key
    cam_key = state.key("gradcam")
    state.layer = "features.2"
    assert state.key("saliency") == key  # a gradient method ignores the layer
    assert state.key("gradcam") != cam_key
    state.layer = None
    state.set_image(torch.rand(3, 16, 16), "b")
    assert state.key("saliency") != key


def test_layer_only_enters_layer_methods(small_cnn):
    state = ExplanationState(as_adapter(small_cnn))
    state.layer = "features.2"
    assert state.layer_for("saliency") is None
    assert state.layer_for("gradcam") == "features.2"
    state.layer = None
    assert state.layer_for("gradcam") is None


def test_explain_matches_the_engine_and_leaves_the_model_alone(small_cnn, guard):
    adapter = as_adapter(small_cnn)
    state = ExplanationState(adapter)
    picture = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    state.set_image(picture)
    with guard(small_cnn):
        for target in (None, 3):
            state.target = target
            got = state.explain("saliency")
            want = explain(adapter, picture[None], target, "saliency")
            torch.testing.assert_close(got.attribution, want.attribution)


def test_randomized_parameters_change_the_result_but_not_the_model(small_cnn, guard):
    adapter = as_adapter(small_cnn)
    state = ExplanationState(adapter, target=0)
    state.set_image(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)))
    trained = state.explain("saliency").attribution
    params = {name: torch.randn_like(p) for name, p in small_cnn.named_parameters()}
    with guard(small_cnn):
        state.randomize(params, "all-random")
        randomized = state.explain("saliency").attribution
        logits = state.logits()
    assert not torch.allclose(trained, randomized)
    torch.testing.assert_close(
        logits, torch.func.functional_call(small_cnn, params, (state.model_input(),))[0]
    )
    state.randomize(None, "")
    assert state.randomization == "" and state.params is None
    with pytest.raises(InputError, match="need a name"):
        state.randomize(params, "")


def test_progress_is_passed_only_to_methods_that_take_it(small_cnn):
    assert accepts_progress("integrated_gradients") and not accepts_progress("saliency")
    state = ExplanationState(
        as_adapter(small_cnn), options={"integrated_gradients": {"steps": 4, "batch_size": 2}}
    )
    state.set_image(torch.rand(3, 16, 16))
    calls = []
    state.explain("integrated_gradients", lambda done, total: calls.append((done, total)))
    state.explain("saliency", lambda done, total: calls.append("never"))
    assert calls and calls[-1][0] == calls[-1][1] and "never" not in calls


def test_display_picture_is_rgb_uint8_also_for_grey_models():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.zeros(1, 1, 8, 8))
    state = ExplanationState(as_adapter(model.eval()))
    state.set_image(np.full((8, 8, 3), 255, np.uint8))
    assert state.picture.shape == (1, 8, 8)
    shown = state.display_picture()
    assert shown.shape == (8, 8, 3) and shown.dtype == np.uint8 and (shown == 255).all()


def test_a_request_is_fixed_to_the_choices_made_when_it_was_asked(small_cnn):
    state = ExplanationState(as_adapter(small_cnn), target=1)
    first = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    state.set_image(first)
    key, compute = state.request("saliency")
    state.target = 2
    state.set_image(torch.rand(3, 16, 16))
    result = compute()
    assert key[3] == 1 and int(result.target[0]) == 1
    torch.testing.assert_close(result.attribution, explain(small_cnn, first[None], 1, "saliency").attribution)
