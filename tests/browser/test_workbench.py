"""The workbench in JupyterLab: the scrubber sets the explorer's CAM layer, a class bar moves every visible
view, and a tab shown for the first time draws its maps."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    """\
import torch
from torch import nn
from xai_widgets import Workbench

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
).eval()
pictures = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
bench = Workbench(model, pictures, methods=["gradcam"], road=False, scores=False, size=96)
bench
""",
]


def until(value, timeout: float = 60.0):
    """Poll ``value()`` until it is not None (a click reaches the kernel after a round trip)."""
    deadline = time.monotonic() + timeout
    while (result := value()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def test_the_scrubber_and_a_class_bar_move_every_visible_view(lab):
    nb = lab.open_notebook(CELLS)
    page = nb.page
    explorer_map = nb.heatmap_canvas("gradcam")
    nb.wait_map(explorer_map)
    film = page.locator(".xai-workbench .xai-camanim").first
    film_canvas = film.locator("canvas").first
    page.wait_for_function("(c) => Number(c.dataset.maps) > 0", arg=film_canvas.element_handle())
    names = nb.eval("bench.view('camanim').film.names")
    assert int(film.get_attribute("data-index")) == len(names) - 1  # the explorer's (default) CAM layer

    film.locator(".xai-camanim-back").click()
    chosen = names[-2]
    title = page.locator(".xai-explorer .xai-heatmap-title").first
    title.filter(has_text=f"gradcam @ {chosen} ").wait_for()
    assert nb.eval("bench.explorer.state.layer") == chosen

    films = nb.maps(film_canvas)
    maps = nb.maps(explorer_map)
    bar = page.locator(".xai-explorer-predictions rect.bar").nth(1)
    bar.scroll_into_view_if_needed()
    bar = bar.bounding_box()
    page.mouse.click(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)  # what the pointer hits there
    target = until(lambda: nb.eval("bench.state.target"))
    assert (
        target == nb.eval("bench.explorer._ordered[1]")
        and nb.eval("bench.view('camanim').state.target") == target
    )
    page.wait_for_function(
        "([c, n]) => Number(c.dataset.maps) > n", arg=[film_canvas.element_handle(), films]
    )
    nb.wait_map(explorer_map, more_than=maps)
    title.filter(has_text=f"→ class {target}").wait_for()

    page.locator(".xai-workbench-tabs").get_by_text("sanity check").click()
    card = page.locator(".xai-sanity-cards canvas.xai-heatmap-canvas").first
    nb.wait_map(card)
    assert nb.eval("bench.view('sanity').children[0].state.target") == target
    assert nb.canvas_stats(card)["distinct"] > 20
