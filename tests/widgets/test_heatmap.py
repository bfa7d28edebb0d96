"""HeatmapView: colormaps, binary transport, clipping and the Python rendering used by to_png."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image

from xai_widgets import InputError
from xai_widgets.colormaps import COLORMAPS, colormap_table, resolve_colormap
from xai_widgets.widgets.heatmap import HeatmapView, clip_value


def test_colormap_tables_pass_through_their_control_points():
    for name, (_, points) in COLORMAPS.items():
        table = colormap_table(name)
        assert table.shape == (256, 3) and table.dtype == np.uint8
        assert tuple(table[0]) == tuple(int(points[0][i : i + 2], 16) for i in (1, 3, 5))
        assert tuple(table[-1]) == tuple(int(points[-1][i : i + 2], 16) for i in (1, 3, 5))
    bwr = colormap_table("bwr")
    assert np.abs(bwr[127].astype(int) - 255).max() <= 2  # white at zero
    assert tuple(colormap_table("gray")[128]) == (128, 128, 128)


def test_auto_colormap_is_diverging_for_signed_maps_and_sequential_otherwise():
    assert COLORMAPS[resolve_colormap("auto", True)][0] == "diverging"
    assert COLORMAPS[resolve_colormap("auto", False)][0] == "sequential"
    assert resolve_colormap("viridis", True) == "viridis"
    with pytest.raises(InputError, match="unknown colormap 'rainbow'"):
        resolve_colormap("rainbow", True)
    view = HeatmapView(map=np.ones((2, 2)))
    with pytest.raises(InputError, match="available: auto, RdBu"):
        view.colormap = "rainbow"


def test_picture_and_map_travel_as_binary_buffers_once():
    picture = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    values = np.linspace(-2e-6, 1e-6, 12 * 10, dtype=np.float32).reshape(12, 10)
    view = HeatmapView(picture, values, title="saliency")
    state, paths, buffers = _remove_buffers(view.get_state())
    sizes = {path[0]: memoryview(buffer).nbytes for path, buffer in zip(paths, buffers)}
    assert sizes["image"] == 12 * 10 * 3 and sizes["values"] == 12 * 10 * 2
    assert "image" not in state and "values" not in state
    long_text = [
        k for k, v in state.items() if isinstance(v, str) and len(v) > 1000 and k not in ("_esm", "_css")
    ]
    assert long_text == []  # no picture smuggled in as base64 text
    assert view.image_shape == [12, 10] and view.values_shape == [12, 10] and view.signed
    np.testing.assert_array_equal(view.picture, picture)
    # float16 after scaling by max|v|: tiny gradients keep ~3 significant digits
    np.testing.assert_allclose(view.map, values, rtol=0, atol=2e-6 * 2**-11)


def test_update_changes_only_what_it_is_given():
    view = HeatmapView(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4)))
    image = view.image
    view.update(map=-np.ones((2, 2)), error="boom")
    assert view.image == image and view.values_shape == [2, 2] and view.signed and view.error == "boom"
    view.update(map=np.ones((2, 2)))
    assert not view.signed
    with pytest.raises(InputError, match="no display setting 'colour'"):
        view.update(colour="red")
    view.clear_map()
    assert view.map is None


def test_inputs_are_checked():
    with pytest.raises(InputError, match="NaN"):
        HeatmapView(map=np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match=r"h×w"):
        HeatmapView(map=np.ones((2, 3, 4)))
    with pytest.raises(InputError, match="5 channels.*a picture has 1 .grey., 3 .RGB. or 4 .RGBA."):
        HeatmapView(np.ones((2, 3, 5)))
    tensor_view = HeatmapView(torch.ones(1, 3, 4, 4) * 0.5, torch.zeros(1, 4, 4))
    assert tensor_view.picture[0, 0].tolist() == [128, 128, 128]


def test_composite_blends_the_colormap_over_the_picture():
    picture = np.full((2, 2, 3), 100, np.uint8)
    values = np.array([[-1.0, 0.0], [0.5, 1.0]], np.float32)
    view = HeatmapView(picture, values, opacity=1.0, clip="symmetric", colormap="RdBu")
    table = colormap_table("RdBu")
    colors = view.composite()
    assert tuple(colors[0, 0]) == tuple(table[0])
    assert tuple(colors[0, 1]) == tuple(table[128])
    assert tuple(colors[1, 0]) == tuple(table[191])
    assert tuple(colors[1, 1]) == tuple(table[255])
    view.opacity = 0.0
    np.testing.assert_array_equal(view.composite(), picture)
    view.opacity = 0.5
    expected = np.round(0.5 * 100 + 0.5 * table[255].astype(float)).astype(np.uint8)
    assert tuple(view.composite()[1, 1]) == tuple(expected)


def test_sequential_colormaps_show_magnitude():
    view = HeatmapView(map=np.array([[-1.0, 1.0]], np.float32), colormap="gray", clip="symmetric")
    assert view.colors()[0, 0].tolist() == view.colors()[0, 1].tolist() == [255, 255, 255]


def test_percentile_clipping_saturates_everything_above_the_percentile():
    values = np.concatenate([np.linspace(0, 1, 99), [100.0]]).astype(np.float32).reshape(10, 10)
    assert clip_value(np.abs(values), "symmetric", 99) == 100.0
    limit = clip_value(np.abs(values), "percentile", 98)
    assert limit == pytest.approx(np.percentile(values, 98))
    view = HeatmapView(map=values, colormap="gray", clip="percentile", percentile=98.0)
    assert (view.colors()[values.astype(np.float16) >= limit] == 255).all()


def test_map_is_resized_to_the_picture_with_the_chosen_smoothing():
    picture = np.zeros((8, 8, 3), np.uint8)
    values = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    view = HeatmapView(picture, values, opacity=1.0, colormap="gray", clip="symmetric", smoothing="nearest")
    nearest = view.composite()
    assert set(np.unique(nearest)) == {0, 255}
    view.smoothing = "bilinear"
    assert len(np.unique(view.composite())) > 2


def test_to_png_writes_the_composite(tmp_path):
    view = HeatmapView(np.zeros((6, 4, 3), np.uint8), np.ones((6, 4)), opacity=1.0)
    image = view.to_png(tmp_path / "view.png", size=8)
    assert image.size == (8, 12)
    with Image.open(tmp_path / "view.png") as saved:
        assert saved.format == "PNG" and saved.size == (8, 12)
    np.testing.assert_array_equal(np.asarray(view.to_png()), view.composite())


def test_every_widget_entry_is_built_into_one_module_and_one_stylesheet():
    """js/widgets/<name>.js → xai_widgets/static/<name>.js + .css (make js); a missing build says how to fix."""
    from pathlib import Path

    from xai_widgets.widgets._assets import STATIC, asset

    entries = sorted(path.stem for path in (Path(__file__).parents[2] / "js" / "widgets").glob("*.js"))
    assert {"heatmap", "camanim_player"} <= set(entries)
    for name in entries:
        module, stylesheet = asset(f"{name}.js"), asset(f"{name}.css")
        assert module.parent == stylesheet.parent == STATIC
        text = module.read_text(encoding="utf-8")
        # an ES module with the helpers of js/lib and its CSS bundled in: nothing left to import at run time
        assert "export" in text and not any(line.startswith("import ") for line in text.splitlines())
    assert str(HeatmapView._esm) == asset("heatmap.js").read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="make js"):
        asset("no_such_widget.js")
