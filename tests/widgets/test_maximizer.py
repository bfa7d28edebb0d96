"""ActivationMaximizer (xai_widgets/widgets/maximizer.py), driven from Python (no browser)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from modelguard import unchanged
from PIL import Image

import xai_widgets as xw
from xai_widgets.widgets.maximizer import ActivationMaximizer, parse_unit, to_rgb


@pytest.fixture(scope="module")
def leaky() -> xw.ModelAdapter:
    return xw.zoo.load("shapes-leaky", device="cpu")


@pytest.fixture(scope="module")
def examples() -> torch.Tensor:
    return xw.data.shapes.make_shapes(16, seed=3).images


def test_runs_are_kept_per_slope_and_match_the_engine(leaky, examples):
    am = ActivationMaximizer(leaky, target=2, steps=6, background=False, examples=examples, k=3, fps=1e6)
    assert am.forward_slopes == [0.01] and "forward 0.01" in am.slope_marks.value
    with unchanged(leaky.model):
        am.run()
        am.slope_own.value = False
        am.slope.value = 0.3
        am.run_button.click()
    assert [run.kwargs["backward_slope"] for run in am.runs] == [None, 0.3]
    reference = xw.maximize(leaky, target=2, steps=6, backward_slope=0.3)
    assert torch.equal(am.runs[-1].result.images, reference.images)
    lines = am.curves.marks[1:]
    assert len(lines) == 2 and all(len(line.y) == 7 for line in lines)
    np.testing.assert_allclose(lines[1].y, reference.activations[:, 0].numpy(), rtol=1e-6)
    assert am.frames_drawn >= 6  # live frames and the final picture
    final = Image.open(__import__("io").BytesIO(am.final.value))
    assert final.size == (am.canvas.width, am.canvas.height)
    assert am.final.layout.display is None and am.canvas.layout.display == "none"
    assert "saturation" in am.summary.value and "slope 0.3" in am.summary.value
    assert len(am.examples.crops) == 3 and len(am.examples_box.children) == 4


def test_layer_unit_and_bad_units_show_errors(leaky, examples):
    am = ActivationMaximizer(
        leaky, layer="layer1.0.conv2", unit=3, steps=3, background=False, examples=examples, k=2
    )
    am.run()
    assert am.message.value == "" and am.runs[-1].result.objective.startswith("layer1.0.conv2 channel 3")
    assert am.examples.boxes is not None
    for text, words in (("16", "channels are 0..15"), ("1, 99, 0", "0..31"), ("x", "channel (3)")):
        am.unit_text.value = text
        am.run()
        assert words in am.message.value
    assert len(am.runs) == 1
    am.unit_text.value = "2, 4, 5"
    am.run()
    assert am.message.value == "" and len(am.runs) == 2


def test_stop_cancels_a_background_run_and_keeps_the_model(leaky):
    am = ActivationMaximizer(leaky, target=1, steps=100000, show_examples=False, fps=1e6)
    started = threading.Event()
    draw = am._draw

    def drawing(pictures):
        draw(pictures)
        started.set()

    am._draw = drawing
    with unchanged(leaky.model):
        am.run()
        assert started.wait(60)
        am.stop_button.click()
        assert am.wait(60)
    assert am.runs == [] and am.status.value.startswith("stopped")
    assert len(am.curves.marks[1].y) >= 1  # the curve so far stays


def test_link_with_the_explorer(leaky):
    from xai_widgets.widgets import AttributionExplorer

    explorer = AttributionExplorer(leaky, methods=["saliency"], background=False)
    am = ActivationMaximizer(leaky, background=False)
    am.link(explorer)
    explorer.state.target = 4
    assert am.mode.value == "class" and am.objective() == {"target": 4}
    explorer.state.layer = "layer2.0.conv1"
    assert am.objective() == {"layer": "layer2.0.conv1", "unit": 0}
    other = ActivationMaximizer(xw.zoo.load("shapes-resnet", device="cpu"), background=False)
    with pytest.raises(xw.InputError, match="another model"):
        other.link(explorer)


def test_export_png_and_gif(leaky, tmp_path):
    am = ActivationMaximizer(leaky, target=0, steps=4, n=2, background=False, show_examples=False)
    with pytest.raises(xw.InputError, match="no run"):
        am.save(tmp_path / "none.png")
    am.run()
    am.export_name.value = str(tmp_path / "am")
    am.png_button.click()
    am.gif_button.click()
    with Image.open(tmp_path / "am.png") as image:
        assert image.size == (2 * 4 * 64, 4 * 64)
    with Image.open(tmp_path / "am.gif") as image:
        assert image.n_frames == len(am.runs[0].result.snapshot_steps)


def test_helpers():
    assert parse_unit("3") == 3 and parse_unit("(1, 2, 3)") == (1, 2, 3)
    strip = to_rgb(torch.ones(2, 1, 2, 3) * 0.5, 2)
    assert strip.shape == (4, 12, 3) and (strip == 128).all()
