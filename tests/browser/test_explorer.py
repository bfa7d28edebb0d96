"""AttributionExplorer in JupyterLab, in headless Chromium: rendering, linked controls, browser-only display
changes, errors, and the widget state saved with the notebook.

One notebook (one kernel) serves the whole module; the tests run in file order on it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CELLS = [
    """\
import torch
from torch import nn
from xai_widgets.data.shapes import make_shapes
from xai_widgets.widgets import AttributionExplorer

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
).eval()
shapes = make_shapes(2, size=48, seed=3).images
""",
    """\
explorer = AttributionExplorer(
    model, {"first": shapes[0], "second": shapes[1]}, methods=["saliency", "input_x_gradient"],
    labels=["cat", "dog", "fox", "owl"], size=160,
)
explorer
""",
    """\
import numpy as np
from xai_widgets.widgets import HeatmapView

rng = np.random.default_rng(0)
check = HeatmapView(
    rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), rng.standard_normal((24, 32)) * 1e-4, title="agreement",
    size=32, smoothing="nearest", opacity=1.0, clip="percentile", percentile=97.5,
)
check
""",
]


@pytest.fixture(scope="module")
def explorer_nb(new_lab):
    with new_lab() as lab:
        yield lab.open_notebook(CELLS, name="explorer.ipynb")


def first_view_canvas(nb):
    return nb.page.locator(".xai-explorer-grid .xai-heatmap").first.locator("canvas.xai-heatmap-canvas")


def test_renders_nonblank_heatmaps(explorer_nb):
    nb = explorer_nb
    for title in ("saliency", "input_x_gradient"):
        canvas = nb.heatmap_canvas(title)
        nb.wait_map(canvas)
        stats = nb.canvas_stats(canvas)
        assert (stats["width"], stats["height"]) == (160, 160)
        assert stats["std"] > 5 and stats["distinct"] > 100, stats
    # four classes: a bar each, and behind each bar its clickable full-height column
    assert nb.page.locator(".xai-explorer-predictions rect.bar").count() == 2 * 4


def test_browser_colours_match_python_rendering(explorer_nb):
    nb = explorer_nb
    canvas = nb.heatmap_canvas("agreement")
    nb.wait_map(canvas)
    pixels = canvas.evaluate(
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )
    browser = np.array(pixels, dtype=int).reshape(24, 32, 4)[:, :, :3]
    python = np.array(nb.eval("check.composite().tolist()"), dtype=int)
    difference = np.abs(browser - python)
    assert difference.max() <= 3 and difference.mean() < 0.5, difference.max()


def test_choosing_another_method_changes_the_heatmap(explorer_nb):
    nb = explorer_nb
    canvas = first_view_canvas(nb)
    before = nb.canvas_stats(canvas)["digest"]
    nb.page.locator(".xai-explorer select[multiple]").select_option(["integrated_gradients"])
    nb.page.locator(".xai-explorer-grid .xai-heatmap-title", has_text="integrated_gradients").wait_for()
    canvas = first_view_canvas(nb)
    nb.wait_map(canvas)
    assert nb.canvas_stats(canvas)["digest"] != before
    assert nb.eval("explorer.state.methods") == ["integrated_gradients"]
    assert nb.page.locator(".xai-explorer-grid .xai-heatmap").count() == 1


def test_clicking_a_class_bar_sets_the_target(explorer_nb):
    nb = explorer_nb
    canvas = first_view_canvas(nb)
    drawn = nb.wait_map(canvas)
    before = nb.canvas_stats(canvas)["digest"]
    second = nb.eval("explorer._ordered[1]")
    bars = nb.page.locator(".xai-explorer-predictions rect.bar")  # the columns first, then the bars
    bars.nth(bars.count() // 2 + 1).click()
    nb.wait_map(canvas, more_than=drawn)
    assert nb.eval("explorer.state.target") == second
    assert nb.eval("explorer.explanation('integrated_gradients').target.tolist()") == [second]
    assert nb.canvas_stats(canvas)["digest"] != before


def test_a_small_class_bar_is_clicked_through_its_column(explorer_nb):
    """A click above a short bar (on its faint full-height column) chooses that class: a bar under a pixel
    tall can be chosen. The axis follows the data, so the tallest bar fills the chart."""
    nb = explorer_nb
    canvas = first_view_canvas(nb)
    drawn = nb.wait_map(canvas)
    last = nb.eval("explorer._ordered[-1]")
    column = nb.page.evaluate(
        """() => {
          const rects = [...document.querySelectorAll('.xai-explorer-predictions rect.bar')];
          const grey = (r) => getComputedStyle(r).fill === 'rgb(127, 127, 127)';
          const column = rects.filter(grey).at(-1).getBoundingClientRect();
          const bar = rects.filter((r) => !grey(r)).at(-1).getBoundingClientRect();
          return { x: column.x + column.width / 2, top: column.y, height: column.height, bar: bar.y };
        }"""
    )
    assert column["height"] > 100  # the column spans the chart, whatever the bar's height
    assert column["bar"] - column["top"] > 6  # room above the last bar: the click lands on its column alone
    nb.page.mouse.click(column["x"], column["bar"] - 3)
    nb.wait_map(canvas, more_than=drawn)
    assert nb.eval("explorer.state.target") == last


def test_opacity_and_colormap_change_the_picture_without_a_kernel_message(explorer_nb):
    nb = explorer_nb
    canvas = first_view_canvas(nb)
    view = nb.page.locator(".xai-explorer-grid .xai-heatmap").first
    nb.wait_map(canvas)
    before = nb.canvas_stats(canvas)["digest"]
    nb.reset_messages()
    slider = view.locator("input.xai-heatmap-opacity")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    nb.page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + box["height"] / 2)
    after_opacity = nb.canvas_stats(canvas)["digest"]
    view.locator("select.xai-heatmap-colormap").select_option("viridis")
    after_colormap = nb.canvas_stats(canvas)["digest"]
    assert len({before, after_opacity, after_colormap}) == 3
    assert 0.15 < float(slider.input_value()) < 0.45
    canvas.hover()
    assert view.locator(".xai-heatmap-readout").inner_text().startswith("x ")
    assert nb.sent_messages() == []


def test_png_button_downloads_what_the_view_shows(explorer_nb):
    nb = explorer_nb
    view = nb.page.locator(".xai-explorer-grid .xai-heatmap").first
    with nb.page.expect_download() as download:
        view.locator("button.xai-heatmap-save").click()
    assert download.value.suggested_filename.startswith("integrated_gradients")
    with open(download.value.path(), "rb") as saved:
        image = Image.open(saved)
        assert image.format == "PNG" and image.size == (160, 160)
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 100


def test_a_bad_image_shows_an_error_and_the_widget_stays_usable(explorer_nb):
    nb = explorer_nb
    with nb.page.expect_file_chooser() as chooser:
        nb.page.locator(".xai-explorer .widget-upload").click()
    chooser.value.set_files(files=[{"name": "bad.png", "mimeType": "image/png", "buffer": b"not a picture"}])
    error = nb.page.locator(".xai-explorer-error")
    error.get_by_text("not an image").wait_for(timeout=60_000)
    assert "bad.png" in error.inner_text()
    canvas = first_view_canvas(nb)
    drawn = nb.maps(canvas)
    nb.page.locator(".xai-explorer .widget-dropdown select").first.select_option("second")
    nb.wait_map(canvas, more_than=drawn)
    assert nb.eval("explorer.state.image_name") == "second"
    assert error.inner_text().strip() == ""


def test_saved_notebook_shows_the_last_heatmap_from_its_widget_state(explorer_nb, lab_server, new_lab):
    nb = explorer_nb
    nb.wait_map(first_view_canvas(nb))
    nb.execute("explorer.wait(120)")
    title = nb.eval("explorer.views['integrated_gradients'].title")
    nb.save()
    saved = json.loads((lab_server.root / nb.path).read_text())
    state = saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    heatmaps = [m for m in state.values() if m["state"].get("_anywidget_id", "").endswith("HeatmapView")]
    assert any(m["state"].get("title") == title for m in heatmaps)
    assert all(
        {b["path"][0] for b in m["buffers"]} >= {"image", "values"}
        for m in heatmaps
        if m["state"]["title"] == title
    )

    nb.page.context.close()
    lab_server.shutdown_kernels()
    with new_lab() as lab:
        reopened = lab.open_path(nb.path, run=False)
        assert reopened.eval("'explorer' in globals()") is False
        canvas = reopened.heatmap_canvas(title)
        reopened.wait_map(canvas, timeout=120)
        stats = reopened.canvas_stats(canvas)
        assert stats["std"] > 5 and stats["distinct"] > 100, stats
