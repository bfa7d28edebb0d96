"""CAManimPlayer without a browser: what it sends (one frame buffer), controls, cache, chart and errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import xai_widgets as xw
from xai_widgets.widgets.camanim_player import PREDICTED, CAManimPlayer
from xai_widgets.widgets.state import ExplanationState


@pytest.fixture
def model():
    from modelguard import SmallCNN

    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture
def picture():
    torch.manual_seed(1)
    return torch.rand(3, 24, 24)


def frames_of(player: CAManimPlayer) -> np.ndarray:
    return np.frombuffer(player.view.frames, np.uint8).reshape(player.view.frames_shape)


def test_the_whole_film_is_sent_once_as_one_buffer_and_the_chart_shows_ybroad(model, picture):
    player = CAManimPlayer(model, picture, background=False, kinds=("conv", "activation"))
    film = player.film
    assert film is not None and len(film) == 6 and player.view.names == film.names
    assert player.view.frames_shape == [6, 24, 24]
    np.testing.assert_array_equal(frames_of(player), film.frames("global").numpy())
    assert player.view.captions[0] == "conv, 24×24" and player.view.image_shape == [24, 24]
    scores = player.scores
    np.testing.assert_allclose(player.points.y, scores.score[:, 0].numpy(), rtol=1e-6)
    assert list(player.points.x) == list(range(6))
    assert player.view.best == int(scores.best[0]) == int(player.best_mark.x[0])
    assert scores.best_layer() in player.figure.title


def test_controls_normalisation_index_method_target_and_the_cache(model, picture):
    player = CAManimPlayer(model, picture, background=False, road=False)
    player.normalization_select.value = "local"
    np.testing.assert_array_equal(frames_of(player), player.film.frames("local").numpy())
    player.index = 2
    assert list(player.cursor.x) == [2.0, 2.0]
    gradcam = player.film
    player.method_select.value = "eigencam"
    assert player.film.method == "eigencam" and player.view.title.startswith("eigencam")
    player.method_select.value = "gradcam"
    assert player.film is gradcam  # from the cache, not recomputed
    player.target_select.value = 4
    assert player.state.target == 4 and int(player.film.target[0]) == 4
    player.target_select.value = PREDICTED
    assert player.state.target is None


def test_follows_an_explorers_state(model, picture):
    state = ExplanationState(xw.as_adapter(model))
    player = CAManimPlayer(model, state=state, background=False, road=False)
    assert player.film is None and "no image" in player.message.value
    state.set_image(picture)
    assert player.film is not None
    state.target = 3
    assert int(player.film.target[0]) == 3 and player.target_select.value == 3


def test_the_film_follows_the_states_weight_randomization(model, picture):
    """A sanity check's randomized weights (substituted, never written into the model) give another film,
    titled so; switching back shows the trained film again."""
    from xai_widgets.sanity import randomized, steps

    state = ExplanationState(xw.as_adapter(model))
    state.set_image(picture)
    player = CAManimPlayer(model, state=state, background=False, road=False)
    trained = player.film.maps.clone()
    before = [p.detach().clone() for p in model.parameters()]
    state.randomize(randomized(state.adapter, "cascading", len(steps(model))), "all layers")
    assert not torch.allclose(player.film.maps, trained) and "all layers" in player.view.title
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    state.randomize(None, "")
    torch.testing.assert_close(player.film.maps, trained)


def test_bad_input_is_reported(model, picture):
    player = CAManimPlayer(model, picture, background=False, road=False)
    with pytest.raises(xw.InputError):
        player.set_image("no-such-picture.png")
    assert "could not use the image" in player.message.value
    with pytest.raises(xw.InputError, match="method"):
        CAManimPlayer(model, picture, method="saliency", background=False)
    with pytest.raises(xw.InputError, match="normalization"):
        CAManimPlayer(model, picture, normalization="per-layer", background=False)


def test_a_user_registered_cam_is_in_the_player_and_films(model, picture):
    """A CAM registered by the user (one small weights function) is offered by the player and plays."""

    def max_grad_cam(adapter, x, target, layer):
        """Channel weights = the largest gradient of each channel."""
        capture = adapter.capture(x, [layer], target)
        acts, grads = capture.acts[layer], capture.grads[layer]
        return torch.einsum("nk,nkhw->nhw", grads.amax(dim=(2, 3)), acts).clamp_min(0)

    xw.register_method("max_grad_cam", max_grad_cam, family="cam", needs_layer=True, cost="cheap")
    try:
        player = CAManimPlayer(model, picture, method="max_grad_cam", background=False, road=False)
        assert "max_grad_cam" in [value for _, value in player.method_select.options]
        assert ("max_grad_cam (cheap)", "max_grad_cam") in player.method_select.options
        film = player.film
        assert film.method == "max_grad_cam" and len(film) == 4
        x = player.state.model_input()
        for i, name in enumerate(film.names):
            single = xw.explain(model, x, film.target, "max_grad_cam", layer=name)
            torch.testing.assert_close(film.raw[i], single.layer_map)
        player.method_select.value = "gradcam"
        assert player.film.method == "gradcam"
    finally:
        xw.unregister_method("max_grad_cam")
    assert "cam" not in [value for _, value in player.method_select.options]  # only at a GAP layer


def test_ybroad_on_request_samples_deep_films_and_is_cancellable(model, picture):
    from xai_widgets.widgets.camanim_player import integer_ticks, road_layers

    assert road_layers(5, 16) == [0, 1, 2, 3, 4] and road_layers(120, 16)[::15] == [0, 119]
    assert len(road_layers(120, 16)) == 16 and road_layers(7, None) == list(range(7))
    assert integer_ticks(6) == [0, 1, 2, 3, 4, 5] and integer_ticks(120) == list(range(0, 120, 10))
    player = CAManimPlayer(
        model, picture, background=False, kinds=("conv", "activation"), road=False, road_sample=3
    )
    assert player.scores is None and not player.road_button.disabled
    assert list(player.x_axis.tick_values) == list(range(6))  # whole layers only, no "0 0 1 1"
    assert "score layers" in player.view.status and "3 sampled of 6" in player.view.status
    player.road_button.click()
    indices = road_layers(6, 3)
    assert indices == [0, 2, 5] and player.road_indices == indices
    full = player.film.road(player.percentiles)
    np.testing.assert_allclose(player.points.y, full.score[indices, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert list(player.points.x) == indices and "3 of 6 layers scored" in player.figure.title
    best = indices[int(player.scores.best[0])]
    assert player.view.best == best and player.best_mark.x[0] == best

    # cancel: with the worker held busy, the scoring request waits in the queue and the cancel button stops it
    runner = xw.widgets.JobRunner(background=True)
    stopped = CAManimPlayer(model, picture, runner=runner, road=False)
    assert stopped.wait(60)
    release = threading.Event()
    runner.submit("busy", "busy", lambda progress: release.wait(60))
    stopped.score_layers()
    assert stopped.road_button.disabled and stopped.view.progress == 0.0
    stopped.cancel_button.click()
    release.set()
    assert stopped.wait(60)
    assert stopped.scores is None and "ybROAD cancelled" in stopped.view.status
    assert stopped.view.progress is None and not stopped.road_button.disabled


def test_faint_layers_under_global_normalisation_say_why(model, picture):
    from xai_widgets.widgets.camanim_player import FAINT, frame_captions

    player = CAManimPlayer(model, picture, background=False, kinds=("conv", "activation"), road=False)
    peaks = player.film.frames("global").flatten(1).amax(1).float() / 255
    hinted = [("faint under global normalisation" in caption) for caption in player.view.captions]
    assert hinted == (peaks < FAINT).tolist()
    assert not any("faint" in caption for caption in frame_captions(player.film, "local"))


def test_a_gallery_photograph_or_name_is_a_picture_for_the_player(model):
    from xai_widgets.images import gallery

    by_array = CAManimPlayer(model, gallery()["chelsea"], background=False, road=False)
    by_name = CAManimPlayer(model, "chelsea", background=False, road=False)
    assert by_array.film is not None and by_array.message.value == ""
    assert torch.equal(by_array.state.picture, by_name.state.picture)
