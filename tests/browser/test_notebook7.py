"""Notebook 7 as a second front end: every widget renders there (one page, one cell per widget).

JupyterLab 4 is the main front end of the browser tests (one module per widget); this module only checks that
each widget's view comes up in Notebook 7's page and draws what it computed.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

SETUP = """\
import torch
from torch import nn
import xai_widgets as xw

torch.manual_seed(0)
cnn = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
).eval()
mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
pictures = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
"""

WIDGETS = {
    "HeatmapView": "xw.HeatmapView(pictures[0], torch.randn(32, 32), title='heatmap', size=96)",
    "AttributionExplorer": "xw.AttributionExplorer(cnn, pictures[0], methods=['saliency'], size=96)",
    "CAManimPlayer": "xw.CAManimPlayer(cnn, pictures[0], road=False, size=96)",
    "SanityToggle": "xw.SanityToggle(cnn, pictures[0], methods=['saliency'], scores=False, size=96)",
    "InteractionBars": "xw.InteractionBars(mlp, torch.rand(1, 8, 8), n_units=4, target=1, f='logit')",
    "ActivationMaximizer": (
        "from xai_widgets.widgets.maximizer import ActivationMaximizer\n"
        "maximizer = ActivationMaximizer(cnn, target=1, steps=4, size=64, show_examples=False)\n"
        "maximizer.run()\n"
        "maximizer"
    ),
    "BacktraceView": (
        "from xai_widgets.widgets.workbench import BacktraceView\n"
        "backtrace = BacktraceView(cnn, size=96)\n"
        "backtrace.state.set_image(pictures[0])\n"
        "backtrace"
    ),
    "Workbench": "xw.Workbench(cnn, pictures, methods=['saliency'], tabs=['camanim'], road=False, size=96)",
}
"""One cell each, in this order after the set-up cell; the value is the cell's last expression."""

DRAWN = {
    "HeatmapView": "canvas.xai-heatmap-canvas",
    "AttributionExplorer": "canvas.xai-heatmap-canvas",
    "CAManimPlayer": ".xai-camanim canvas",
    "SanityToggle": ".xai-sanity-cards canvas.xai-heatmap-canvas",
    "BacktraceView": ".xai-backtrace canvas.xai-heatmap-canvas",
    "Workbench": ".xai-workbench canvas.xai-heatmap-canvas",
}
"""Canvases with ``data-maps`` counters: the widget has drawn a computed map once it counts one."""


@pytest.fixture(scope="module")
def nb(new_lab):
    with new_lab() as lab:
        yield lab.open_notebook([SETUP, *WIDGETS.values()], name="notebook7.ipynb", frontend="notebook")


@pytest.mark.parametrize("widget", list(WIDGETS))
def test_renders_in_notebook7(nb, widget):
    page = nb.page
    assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
    cell = page.locator(".jp-CodeCell").nth(1 + list(WIDGETS).index(widget))
    output = cell.locator(".jp-OutputArea-output")
    output.locator(".widget-box, .xai-heatmap").first.wait_for()
    assert "Error" not in output.first.inner_text()
    if widget in DRAWN:
        canvas = output.locator(DRAWN[widget]).first
        canvas.scroll_into_view_if_needed()
        nb.wait_map(canvas)
        assert nb.canvas_stats(canvas)["distinct"] > 10
    elif widget == "InteractionBars":
        chart = output.locator(".xai-actspec-bars").first
        chart.scroll_into_view_if_needed()
        page.wait_for_function(
            "(c) => [...c.querySelectorAll('rect.bar')].some((r) => r.getBBox().height > 0)",
            arg=chart.element_handle(),
        )
    else:  # ActivationMaximizer: the final picture of its run, kept in an image widget
        final = output.locator(".xai-maximizer-final").first
        final.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.naturalWidth > 0", arg=final.element_handle())
        assert output.locator(".xai-maximizer-curve svg").count() >= 1
