"""CAManimPlayer without a browser: what it sends (one frame buffer), controls, cache, chart and errors."""

from __future__ import annotations

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


def test_bad_input_is_reported(model, picture):
    player = CAManimPlayer(model, picture, background=False, road=False)
    with pytest.raises(xw.InputError):
        player.set_image("no-such-picture.png")
    assert "could not use the image" in player.message.value
    with pytest.raises(xw.InputError, match="method"):
        CAManimPlayer(model, picture, method="saliency", background=False)
    with pytest.raises(xw.InputError, match="normalization"):
        CAManimPlayer(model, picture, normalization="per-layer", background=False)
