"""ActivationMaximizer in JupyterLab: the picture is drawn live while the optimisation runs, the activation curve
grows, stop ends the run (nothing changes afterwards), and a bad unit shows its error in the widget."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    "from xai_widgets.widgets.maximizer import ActivationMaximizer\n"
    "am = ActivationMaximizer('shapes-leaky', target=2, steps=100000, optimizer='adam', show_examples=False,"
    " fps=8)",
    "am",
]
# the number of segments of the longest activation curve drawn
CURVE_JS = """
() => {
  const lines = [...document.querySelectorAll(".xai-maximizer-curve path.line")];
  return Math.max(0, ...lines.map((p) => ((p.getAttribute("d") || "").match(/L/g) || []).length));
}
"""


def test_live_picture_curve_stop_and_error(lab):
    nb = lab.open_notebook(CELLS)
    canvas = nb.page.locator(".xai-maximizer canvas").first
    canvas.wait_for(state="visible", timeout=60_000)
    nb.page.locator(".xai-maximizer button", has_text="run").first.click()
    nb.page.wait_for_function("() => true")  # let the click reach the kernel
    deadline = time.monotonic() + 120
    while nb.canvas_stats(canvas)["distinct"] <= 50 and time.monotonic() < deadline:
        time.sleep(0.25)
    first = nb.canvas_stats(canvas)
    assert first["distinct"] > 50  # noise being optimised, not a blank canvas
    curve = nb.page.evaluate(CURVE_JS)
    time.sleep(3.0)
    assert nb.canvas_stats(canvas)["digest"] != first["digest"]  # the live picture changes while running
    assert nb.page.evaluate(CURVE_JS) > curve  # the curve grows in the browser

    nb.page.locator(".xai-maximizer button", has_text="stop").first.click()
    nb.page.wait_for_function(
        "() => document.querySelector('.xai-maximizer').innerText.includes('stopped')", timeout=60_000
    )
    time.sleep(1.0)  # the last frame and curve update sent before the stop
    stopped = (
        nb.canvas_stats(canvas)["digest"],
        nb.page.evaluate(CURVE_JS),
        nb.eval("len(am.curves.marks[1].y)"),
    )
    time.sleep(1.5)
    assert (nb.canvas_stats(canvas)["digest"], nb.page.evaluate(CURVE_JS)) == stopped[:2]  # nothing runs on
    assert nb.eval("am.runs") == [] and nb.eval("len(am.curves.marks[1].y)") == stopped[2] > 1

    nb.execute("am.mode.value = 'layer'; am.layer_select.value = 'layer1.0.conv2'; am.unit_text.value = '99'")
    nb.page.locator(".xai-maximizer button", has_text="run").first.click()
    error = nb.page.locator(".xai-maximizer-error")
    error.get_by_text("channels are 0..15").wait_for(timeout=30_000)
