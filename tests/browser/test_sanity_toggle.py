"""SanityToggle in JupyterLab, in headless Chromium: the switch and the step slider redraw the heatmaps and the
prediction bars under randomized weights, the chart's cursor follows the slider, and switching off shows the
trained maps again from the cache, without computing anything.

One notebook (one kernel) serves the module; the tests run in file order on it.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    """\
from xai_widgets.data.shapes import make_shapes
from xai_widgets.widgets.sanity_toggle import SanityToggle

images = make_shapes(2, size=64, seed=5).images
toggle = SanityToggle("shapes-vgg", images[0], methods=["saliency", "guided_backprop"], granularity="block")
toggle
""",
]
METHODS = ("saliency", "guided_backprop")
SEEN: dict[str, object] = {}


@pytest.fixture(scope="module")
def sanity_nb(new_lab):
    with new_lab() as lab:
        nb = lab.open_notebook(CELLS, name="sanity_toggle.ipynb")
        for method in METHODS:
            nb.wait_map(canvas(nb, method))
        yield nb


def canvas(nb, method):
    view = nb.page.locator(".xai-sanity-cards .xai-heatmap").filter(
        has=nb.page.locator(".xai-heatmap-title", has_text=method)
    )
    return view.first.locator("canvas.xai-heatmap-canvas")


def settle(nb):
    """Wait for the kernel's jobs, then until every shown map and the bars stop changing."""
    nb.execute("toggle.wait(300)")
    previous = None
    for _ in range(40):
        current = (digests(nb), bars(nb), cursor(nb))
        if current == previous:
            return current
        previous = current
        time.sleep(0.5)
    raise AssertionError("the widget kept changing")


def digests(nb):
    return {method: nb.canvas_stats(canvas(nb, method))["digest"] for method in METHODS}


def bars(nb):
    rects = nb.page.locator(".xai-explorer-predictions rect.bar")
    return tuple(round(float(rects.nth(i).get_attribute("height") or 0), 1) for i in range(rects.count()))


def cursor(nb):
    """The x position of the chart's cursor line (the second line mark) in screen pixels."""
    return nb.page.evaluate(
        """() => {
          const paths = document.querySelectorAll(".xai-sanity-chart g.curve path.line");
          const path = paths[paths.length - 1];
          return path ? Math.round(path.getBBox().x) : null;
        }"""
    )


def move_slider(nb, presses):
    handle = nb.page.locator(".xai-sanity-slider .noUi-handle")
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(presses):
        handle.press("ArrowRight")


def test_toggle_and_slider_redraw_maps_bars_and_cursor(sanity_nb):
    nb = sanity_nb
    trained_maps, trained_bars, trained_cursor = settle(nb)
    SEEN["trained"] = trained_maps
    assert nb.eval("toggle.state.randomization") == ""
    assert len(trained_bars) >= 2 and trained_cursor is not None

    nb.page.locator(".xai-sanity-switch").click()
    step1_maps, step1_bars, step1_cursor = settle(nb)
    assert nb.eval("toggle.state.randomization").startswith("cascading/block/seed0/1:classifier")
    assert step1_maps["saliency"] != trained_maps["saliency"]
    assert step1_bars != trained_bars
    assert step1_cursor > trained_cursor

    counts = {method: nb.maps(canvas(nb, method)) for method in METHODS}
    move_slider(nb, 2)
    for method in METHODS:
        nb.wait_map(canvas(nb, method), more_than=counts[method])
    step3_maps, step3_bars, step3_cursor = settle(nb)
    assert nb.eval("toggle.step") == 3
    name = nb.eval("toggle.steps[2]")
    assert name in nb.page.locator(".xai-sanity-step").inner_text()
    assert all(step3_maps[m] != step1_maps[m] for m in METHODS)
    assert step3_bars != step1_bars
    assert step3_cursor > step1_cursor
    # the similarity curve has points for the visited steps, and scores are shown beside each map
    assert set(nb.eval("sorted(toggle.curve('saliency'))")) >= {0, 1, 3}
    assert "input alignment" in nb.page.locator(".xai-sanity-score").first.inner_text()


def test_labels_fit_scores_stay_short_and_the_legend_leaves_the_curves_clear(sanity_nb):
    """Seen in the browser: the toggle's label is whole, each map's scores take at most three lines, the
    legend sits below the chart, and every curve point lies above the chart's axis minimum."""
    nb = sanity_nb
    switch = nb.page.locator(".xai-sanity-switch")
    assert switch.evaluate("(b) => b.scrollWidth <= b.clientWidth + 1"), "the toggle's label is cut off"
    score = nb.page.locator(".xai-sanity-score").first
    score.locator("div[title]").wait_for(timeout=60_000)
    line = score.evaluate("(e) => parseFloat(getComputedStyle(e.querySelector('div[title]')).lineHeight)")
    assert score.evaluate("(e) => e.getBoundingClientRect().height") <= 3 * line + 2
    legend = nb.page.locator(".xai-sanity-legend")
    assert all(method in legend.inner_text() for method in METHODS)
    chart_bottom = nb.page.locator(".xai-sanity-chart").evaluate("(e) => e.getBoundingClientRect().bottom")
    assert legend.evaluate("(e) => e.getBoundingClientRect().top") >= chart_bottom - 1
    lowest = nb.eval("min(v for m in toggle.state.methods for v in toggle.curve(m).values())")
    assert nb.eval("toggle.y_scale.min") < lowest


def test_switching_off_restores_the_trained_maps_from_the_cache(sanity_nb):
    nb = sanity_nb
    randomized_maps, _, randomized_cursor = settle(nb)
    assert nb.eval("toggle.state.randomization") != ""
    nb.execute(
        "calls = []\n"
        "_explain = toggle.state.explain\n"
        "toggle.state.explain = lambda *a, **k: (calls.append(a), _explain(*a, **k))[1]\n"
    )
    nb.page.locator(".xai-sanity-switch").click()
    maps, _, off_cursor = settle(nb)
    assert nb.eval("toggle.state.randomization") == ""
    assert nb.eval("len(calls)") == 0
    assert maps == SEEN["trained"] and maps != randomized_maps
    assert off_cursor < randomized_cursor
    # and back on: the randomized maps of the same step come from the cache too
    nb.page.locator(".xai-sanity-switch").click()
    again, _, again_cursor = settle(nb)
    assert again == randomized_maps and again_cursor == randomized_cursor
    assert nb.eval("len(calls)") == 0
