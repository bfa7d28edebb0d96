"""The explorer renders under Voila: its heatmap canvas, judged by its own pixels, is not blank."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    """\
import torch
from torch import nn
from xai_widgets.data.shapes import make_shapes
from xai_widgets.widgets import AttributionExplorer

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
AttributionExplorer(model.eval(), make_shapes(1, size=32, seed=0).images[0], methods=["saliency"], size=128)
""",
]

STATS_JS = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  return { width: canvas.width, distinct: colours.size, maps: Number(canvas.dataset.maps) };
}"""


def test_explorer_renders_under_voila(voila):
    page, _ = voila(CELLS)
    canvas = page.locator("canvas.xai-heatmap-canvas").first
    canvas.wait_for(timeout=180_000)
    page.wait_for_function("(c) => Number(c.dataset.maps) > 0", arg=canvas.element_handle(), timeout=180_000)
    stats = canvas.evaluate(STATS_JS)
    assert stats["width"] == 128
    assert stats["distinct"] > 100, stats
