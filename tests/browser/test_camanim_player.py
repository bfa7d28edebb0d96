"""CAManimPlayer in JupyterLab: the film plays and scrubs in the browser with no kernel message per frame,
the ybROAD cursor follows the scrubber, a click on the curve moves the scrubber, bad input shows an error."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    "import torch\n"
    "from xai_widgets.data import make_shapes\n"
    "from xai_widgets.widgets.camanim_player import CAManimPlayer\n"
    "from xai_widgets.zoo.models import ARCHITECTURES\n"
    "torch.manual_seed(0)\n"
    "model = ARCHITECTURES['shapes-resnet']().eval()\n"
    "player = CAManimPlayer(model, make_shapes(1, 64, seed=1).images[0], background=False, fps=12)",
    "player",
]

# Records every layer the film shows (the root's data-index) and reads the chart's geometry.
WATCH_JS = """
() => {
  const root = document.querySelector(".xai-camanim");
  window.__visited = [];
  new MutationObserver(() => window.__visited.push(Number(root.dataset.index)))
    .observe(root, { attributes: true, attributeFilter: ["data-index"] });
}
"""
CHART_JS = """
() => {
  const figure = document.querySelector(".xai-camanim-road");
  const points = [...figure.querySelectorAll("g.object_grp")]
    .filter((g) => (g.querySelector(".dot")?.getAttribute("style") || "").includes("42, 122, 226"))
    .map((g) => { const box = g.getBoundingClientRect(); return [box.x + box.width / 2, box.y + box.height / 2]; });
  const cursor = [...figure.querySelectorAll("path.line")]
    .find((p) => (p.getAttribute("style") || "").includes("214, 39, 40"));
  const box = cursor.getBoundingClientRect();
  return { points, cursor: box.x + box.width / 2 };
}
"""


@pytest.fixture(scope="module")
def nb(new_lab):
    with new_lab() as lab:
        notebook = lab.open_notebook(CELLS)
        notebook.wait_map(notebook.heatmap_canvas())
        notebook.page.wait_for_function(
            "n => document.querySelectorAll('.xai-camanim-road g.object_grp').length > n",
            arg=3,
            timeout=120_000,
        )
        notebook.page.evaluate(WATCH_JS)
        yield notebook


def wait_cursor_at(nb, index: int) -> None:
    """Wait until the chart's cursor stands on the point of layer ``index`` (within 1.5 px)."""
    nb.page.wait_for_function(
        f"i => {{ const c = ({CHART_JS})(); return Math.abs(c.cursor - c.points[i][0]) < 1.5; }}",
        arg=index,
        timeout=10_000,
    )


def comm_messages(nb) -> int:
    return sum(message["type"] == "comm_msg" for message in nb.sent_messages())


def shown(nb) -> int:
    return int(nb.page.locator(".xai-camanim").first.get_attribute("data-index"))


def test_the_film_renders_and_dragging_the_scrubber_sends_no_message_per_frame(nb):
    layers = nb.eval("len(player.film)")
    canvas = nb.heatmap_canvas()
    assert nb.canvas_stats(canvas)["distinct"] > 20  # picture and map, not a blank canvas
    assert nb.page.locator(".xai-camanim-scrubber").get_attribute("max") == str(layers - 1)
    scrubber = nb.page.locator(".xai-camanim-scrubber")
    scrubber.scroll_into_view_if_needed()
    box = scrubber.bounding_box()
    y = box["y"] + box["height"] / 2
    paints = nb.paints(canvas)
    nb.page.evaluate("() => { window.__visited.length = 0; }")
    nb.reset_messages()
    nb.page.mouse.move(box["x"] + 2, y)
    nb.page.mouse.down()
    for step in range(1, 31):
        nb.page.mouse.move(box["x"] + 2 + step * (box["width"] - 4) / 30, y)
    visited = nb.page.evaluate("() => window.__visited.slice()")
    assert comm_messages(nb) == 0  # every frame of the drag was drawn in the browser alone
    nb.page.mouse.up()
    assert len(set(visited)) >= layers // 2 and visited[-1] == layers - 1
    assert nb.paints(canvas) - paints >= len(set(visited))
    time.sleep(1.0)
    assert comm_messages(nb) == 1  # the resting position, once
    assert nb.eval("player.index") == layers - 1


def test_the_road_cursor_follows_the_scrubber(nb):
    for step in ("prev", "prev", "prev"):
        nb.page.locator(f".xai-camanim-{'back' if step == 'prev' else 'forward'}").click()
    index = shown(nb)
    assert len(nb.page.evaluate(CHART_JS)["points"]) == nb.eval("len(player.film)")
    wait_cursor_at(nb, index)
    nb.page.locator(".xai-camanim-forward").click()
    assert shown(nb) == index + 1
    wait_cursor_at(nb, index + 1)


def test_playback_runs_in_the_browser(nb):
    nb.page.evaluate("() => { window.__visited.length = 0; }")
    nb.reset_messages()
    nb.page.locator(".xai-camanim-play").click()
    nb.page.wait_for_function("() => new Set(window.__visited).size >= 8", timeout=30_000)
    assert comm_messages(nb) <= 1  # the play click itself; none per frame
    nb.page.locator(".xai-camanim-play").click()
    assert nb.page.locator(".xai-camanim").first.get_attribute("data-playing") == "false"


def test_clicking_the_curve_moves_the_scrubber(nb):
    target = 2 if shown(nb) != 2 else 3
    nb.page.locator(".xai-camanim-road").scroll_into_view_if_needed()
    chart = nb.page.evaluate(CHART_JS)
    nb.page.mouse.click(*chart["points"][target])
    nb.page.wait_for_function(
        "i => document.querySelector('.xai-camanim').dataset.index === String(i)", arg=target, timeout=10_000
    )
    assert nb.page.locator(".xai-camanim-scrubber").input_value() == str(target)
    wait_cursor_at(nb, target)
    time.sleep(1.0)
    assert nb.eval("player.index") == target


def test_keyboard_steps_the_film_and_the_chart_reads_cleanly(nb):
    """Arrow keys on the focused player step the layers in the browser; the chart's layer ticks are whole
    and distinct, its y label clears the tick labels, and a faint first frame says why under the frame."""
    nb.page.locator(".xai-camanim-play").scroll_into_view_if_needed()
    nb.page.locator(".xai-camanim-label").click()  # focus the player (not a control)
    start = shown(nb)
    nb.reset_messages()
    nb.page.keyboard.press("ArrowLeft" if start > 0 else "ArrowRight")
    moved = start - 1 if start > 0 else start + 1
    assert shown(nb) == moved
    nb.page.keyboard.press("Home")
    assert shown(nb) == 0 and comm_messages(nb) == 0  # stepping happened in the browser
    wait_cursor_at(nb, 0)
    if nb.eval("'faint' in player.view.captions[0]"):
        assert "try local" in nb.page.locator(".xai-camanim-label").inner_text()
    ticks = (
        nb.page.locator(".xai-camanim-road .axis")
        .first.locator(".tick text")
        .evaluate_all("(texts) => texts.map((t) => t.textContent)")
    )
    assert len(ticks) == len(set(ticks)) >= 3 and all(t.strip().isdigit() for t in ticks), ticks
    overlap = nb.page.evaluate(
        """() => {
          const axis = [...document.querySelectorAll('.xai-camanim-road .axis')][1];
          const label = axis.querySelector('.axislabel').getBoundingClientRect();
          return [...axis.querySelectorAll('.tick text')].some((t) => {
            const b = t.getBoundingClientRect();
            return b.width > 0 && b.left < label.right && label.left < b.right && b.top < label.bottom && label.top < b.bottom;
          });
        }"""
    )
    assert not overlap, "the ybROAD label overlaps its tick labels"


def test_a_bad_image_shows_an_error_and_the_player_stays_usable(nb):
    nb.execute("try:\n    player.set_image('no-such-picture.png')\nexcept Exception:\n    pass")
    message = nb.page.locator(".xai-camanim-player").first.get_by_text("could not use the image")
    message.wait_for(timeout=10_000)
    nb.page.locator(".xai-camanim-forward").click()
    assert nb.eval("player.film is not None")
