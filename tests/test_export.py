"""Export: MP4 and GIF open and hold one captioned frame per layer; the PNG contact sheet is a grid."""

from __future__ import annotations

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

import xai_widgets as xw
from xai_widgets.all_layers import camanim
from xai_widgets.colormaps import colormap_table
from xai_widgets.export import render_frames, save


@pytest.fixture(scope="module")
def film():
    from modelguard import SmallCNN

    torch.manual_seed(0)
    return camanim(
        SmallCNN().eval(), torch.rand(1, 3, 32, 32), target=1, kinds=("conv", "activation", "pool")
    )


def test_mp4_and_gif_open_with_one_frame_per_layer(film, tmp_path):
    assert len(film) == 8  # 3 conv, 3 ReLU, max-pool and the 1×1 global average pool
    mp4 = save(film, tmp_path / "film.mp4", fps=5, size=64)
    gif = film.save(tmp_path / "film.gif", size=64, mode="local")
    with imageio.get_reader(mp4, format="FFMPEG") as reader:
        assert reader.count_frames() == len(film)
        assert reader.get_meta_data()["fps"] == 5
        first = reader.get_data(0)
    assert first.shape[1] == 64 and first.shape[0] % 16 == 0
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == len(film) and frames.shape[2] == 64


def test_frames_blend_the_colormap_over_the_picture_and_carry_a_caption(film):
    plain = render_frames(film, mode="global", alpha=1.0, size=32, caption=False)  # 32 px: no resizing
    assert plain.shape == (len(film), 32, 32, 3)
    table = colormap_table("inferno").astype(int)
    level = (film.global_()[:, 0] * 255).round().long().numpy()
    np.testing.assert_array_equal(plain, table[level])
    half = render_frames(film, mode="local", alpha=0.5, size=32, caption=False)
    picture = film.image[0].permute(1, 2, 0).numpy()
    colours = table[(film.local()[:, 0] * 255).round().long().numpy()]
    np.testing.assert_allclose(half, 0.5 * picture * 255 + 0.5 * colours, atol=1)
    captioned = render_frames(film, size=48)
    band = captioned[:, 48:]
    assert captioned.shape[1] > 48 and (band > 200).any(axis=(1, 2, 3)).all()  # white text on every frame
    assert not np.array_equal(band[0], band[1])  # each frame names its own layer


def test_contact_sheet_is_a_grid_of_all_frames(film, tmp_path):
    path = film.save(tmp_path / "sheet.png", columns=4, size=32)
    frame = render_frames(film, size=32)
    with Image.open(path) as sheet:
        assert sheet.size == (4 * frame.shape[2], 2 * frame.shape[1])


def test_export_errors_are_clear(film, tmp_path):
    with pytest.raises(xw.InputError, match=".mp4, .gif or .png"):
        film.save(tmp_path / "film.avi")
    with pytest.raises(xw.InputError, match="colormap"):
        render_frames(film, colormap="rainbowish")
    with pytest.raises(xw.InputError, match="sample"):
        render_frames(film, sample=3)
