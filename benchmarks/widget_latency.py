"""Widget latency in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Measures, on a zoo model on the CPU:
- method change → new heatmap painted: from the ``change`` event of the explorer's method list (in the page) to
  the end of the first paint of the new view's map (``data-map-painted-at``), with an empty cache (the method
  runs) and with the result cached; targets: under 300 ms;
- display changes in the browser (opacity slider, colormap menu): the time the view's event handler takes to
  repaint the canvas, and the time to the next animation frame; target: under 16 ms (one frame).

Workbench (``--part workbench``; the explorer with saliency, gradcam and lrp_composite above the CAManim tab):
- class-bar click → every visible view repainted (the explorer's three maps and the CAManim film), computed
  (cache cleared before each click) and cached; target: under 300 ms;
- tab switch → the shown tab on screen with maps of the current class (a hidden tab follows a class change from
  the cache while hidden, else catches up when shown); target: under 50 ms;
- cancel: a sanity sweep running in the kernel, ``Workbench.cancel()`` → the sweep has stopped (measured in
  the kernel); target: under 1 s;
- ``xai-widgets app``: from starting the command to the first map painted in the page; target: under 10 s.

Times are taken with ``performance.now()`` inside the page, so Playwright's own round trips are not counted.
Usage: ``python benchmarks/widget_latency.py [--model shapes-resnet] [--repeats 5] [--part all|explorer|workbench|app]``;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location(
    "browser_harness", HERE.parent / "tests" / "browser" / "conftest.py"
)
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)

SETUP = """\
import torch
from xai_widgets import zoo
from xai_widgets.data.shapes import make_shapes
from xai_widgets.widgets import AttributionExplorer

torch.set_num_threads({threads})
model = zoo.load({model!r}, device="cpu")
image = make_shapes(1, size=model.input_size[-1], seed=0).images[0]
explorer = AttributionExplorer(model, image, methods=["saliency"], size=224)
explorer
"""

CHOOSE_JS = """
([select, names]) => {
  for (const option of select.options) option.selected = names.includes(option.textContent);
  window.__xaiT0 = performance.now();
  select.dispatchEvent(new Event("change", { bubbles: true }));
}
"""

LATENCY_JS = "(canvas) => Number(canvas.dataset.mapPaintedAt) - window.__xaiT0"

DISPLAY_JS = """
async ([input, kind, values]) => {
  const apply = [];
  const frame = [];
  for (const value of values) {
    const start = performance.now();
    input.value = String(value);
    input.dispatchEvent(new Event(kind, { bubbles: true }));
    apply.push(performance.now() - start);
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    frame.push(performance.now() - start);
  }
  return { apply, frame };
}
"""


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f}"


def method_latency(nb: harness.Notebook, method: str, repeats: int) -> tuple[float, list[float], list[float]]:
    """First use, then cold (cache cleared, new view) and cached latencies of choosing ``method`` next to
    saliency. The first use includes one-time costs (e.g. a method building its rules for the model)."""
    select = nb.page.locator(".xai-explorer select[multiple]").element_handle()
    cold, cached = [], []
    for _ in range(repeats + 1):
        nb.execute(
            "explorer.state.methods = ['saliency']; explorer.wait(300); "
            f"explorer.views.pop({method!r}, None); explorer.runner.clear_cache()"
        )
        nb.page.wait_for_function(
            "() => document.querySelectorAll('.xai-explorer-grid .xai-heatmap').length === 1"
        )
        nb.page.evaluate(CHOOSE_JS, [select, ["saliency", method]])
        canvas = nb.heatmap_canvas(method)
        nb.wait_map(canvas)
        cold.append(nb.page.evaluate(LATENCY_JS, canvas.element_handle()))
        # back and forth again: now the result comes from the cache (the view is new in the page each time)
        nb.execute(
            f"explorer.state.methods = ['saliency']; explorer.wait(300); explorer.views.pop({method!r}, None)"
        )
        nb.page.wait_for_function(
            "() => document.querySelectorAll('.xai-explorer-grid .xai-heatmap').length === 1"
        )
        nb.page.evaluate(CHOOSE_JS, [select, ["saliency", method]])
        canvas = nb.heatmap_canvas(method)
        nb.wait_map(canvas)
        cached.append(nb.page.evaluate(LATENCY_JS, canvas.element_handle()))
    return cold[0], cold[1:], cached[1:]


def display_latency(nb: harness.Notebook, repeats: int) -> dict[str, dict[str, list[float]]]:
    view = nb.page.locator(".xai-explorer-grid .xai-heatmap").first
    nb.reset_messages()
    slider = view.locator("input.xai-heatmap-opacity").element_handle()
    menu = view.locator("select.xai-heatmap-colormap").element_handle()
    opacities = [0.2 + 0.6 * (i % 2) for i in range(repeats)]
    colormaps = [("viridis", "RdBu", "inferno", "gray")[i % 4] for i in range(repeats)]
    results = {
        "opacity": nb.page.evaluate(DISPLAY_JS, [slider, "input", opacities]),
        "colormap": nb.page.evaluate(DISPLAY_JS, [menu, "change", colormaps]),
    }
    sent = nb.sent_messages()
    if sent:
        raise RuntimeError(f"display changes sent messages to the kernel: {sent}")
    return results


WORKBENCH = """\
import torch
from xai_widgets import zoo
from xai_widgets.data.shapes import make_shapes
from xai_widgets.widgets.workbench import Workbench

torch.set_num_threads({threads})
model = zoo.load({model!r}, device="cpu")
images = list(make_shapes(2, size=model.input_size[-1], seed=0).images)
bench = Workbench(model, images, methods=["saliency", "gradcam", "lrp_composite"], tabs=["camanim", "sanity"])
bench
"""

# Record when each canvas last received a map (data-maps changes right before its repaint, in the same task).
WATCH_JS = """
() => {
  window.__xaiPainted = new Map();
  // a click's latency starts when the pointer goes down in the page (not when Playwright is asked to click)
  document.addEventListener("pointerdown", () => { window.__xaiT0 = performance.now(); }, { capture: true });
  const watch = (canvas) => {
    if (canvas.__xaiWatched) return;
    canvas.__xaiWatched = true;
    new MutationObserver(() => window.__xaiPainted.set(canvas, performance.now()))
      .observe(canvas, { attributes: true, attributeFilter: ["data-maps"] });
  };
  document.querySelectorAll(".xai-workbench canvas").forEach(watch);
  new MutationObserver(() => document.querySelectorAll(".xai-workbench canvas").forEach(watch))
    .observe(document.body, { childList: true, subtree: true });
}
"""

# The shown tab's map canvases are on screen (laid out), measured at the animation frame that shows them.
SHOWN_JS = """
(title) => {
  const selector = title === "CAManim" ? ".xai-camanim canvas" : ".xai-sanity-cards canvas.xai-heatmap-canvas";
  const canvases = [...document.querySelectorAll(`.xai-workbench ${selector}`)];
  return Number.isFinite(window.__xaiT0) && canvases.length > 0 && canvases.every((c) => c.offsetParent !== null) &&
    performance.now() - window.__xaiT0;
}
"""

CLICK_JS = "() => { window.__xaiPainted.clear(); window.__xaiT0 = Infinity; }"

# Wait until every given canvas has a map painted after the click; the latency is the last of them.
PAINTED_JS = """
(canvases) => Number.isFinite(window.__xaiT0) && canvases.every((c) => window.__xaiPainted.has(c)) &&
  Math.max(...canvases.map((c) => window.__xaiPainted.get(c))) - window.__xaiT0
"""


# The tab is on screen with every map painted after the class change (while hidden, or after the click).
CAUGHT_UP_JS = """
(canvases) => Number.isFinite(window.__xaiT0) && canvases.length > 0 &&
  canvases.every((c) => c.offsetParent !== null && (window.__xaiPainted.get(c) ?? -1) >= window.__xaiClassT) &&
  performance.now() - window.__xaiT0
"""


VISIBLE_JS = """
() => [...document.querySelectorAll(".xai-workbench canvas")]
  .filter((c) => c.dataset.maps !== undefined && c.offsetParent !== null)
"""


def _visible_canvases(nb: harness.Notebook) -> Any:
    """A handle on the array of map canvases on screen: the explorer's and the shown tab's."""
    return nb.page.evaluate_handle(VISIBLE_JS)


def _click_bar(nb: harness.Notebook, position: int) -> float:
    """Click bar ``position`` of the explorer's chart; ms until every visible view has repainted its map."""
    bar = nb.page.locator(".xai-workbench .xai-explorer-predictions rect.bar").nth(position)
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    canvases = _visible_canvases(nb)
    nb.page.evaluate(CLICK_JS)
    nb.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    handle = nb.page.wait_for_function(PAINTED_JS, arg=canvases, timeout=300_000, polling=10)
    return float(handle.json_value())


def workbench_latency(nb: harness.Notebook, repeats: int) -> list[tuple[str, list[float], str]]:
    """Class-bar clicks alternate between the second and third bar, so every click changes the class."""
    clicks = iter(range(10**6))

    def click() -> float:
        latency = _click_bar(nb, 1 + next(clicks) % 2)
        nb.execute("bench.wait(300)")
        return latency

    def show(title: str) -> None:
        nb.page.locator(".xai-workbench-tabs").get_by_text(title).click()
        nb.execute("bench.wait(300)")

    nb.page.evaluate(WATCH_JS)
    nb.page.wait_for_function(
        "(cs) => cs.length >= 4 && cs.every((c) => Number(c.dataset.maps) > 0)",
        arg=_visible_canvases(nb),
        timeout=300_000,
    )
    nb.execute("bench.wait(300)")
    computed = []
    for _ in range(repeats):
        nb.execute("bench.runner.clear_cache()")
        computed.append(click())
    click()  # both classes are in the cache from here on
    cached = [click() for _ in range(repeats)]

    show("sanity check")
    click()
    click()  # the sanity tab has both classes cached too
    show("CAManim")
    switches = []
    for _ in range(repeats):
        nb.page.evaluate("() => { window.__xaiClassT = performance.now(); }")
        click()  # the CAManim tab follows; the hidden sanity tab follows from the cache, or stays behind
        canvases = nb.page.evaluate_handle(
            "() => [...document.querySelectorAll('.xai-sanity-cards canvas.xai-heatmap-canvas')]"
        )
        nb.page.evaluate("() => { window.__xaiT0 = Infinity; }")
        nb.page.locator(".xai-workbench-tabs").get_by_text("sanity check").click()
        handle = nb.page.wait_for_function(CAUGHT_UP_JS, arg=canvases, timeout=300_000, polling="raf")
        switches.append(float(handle.json_value()))
        nb.execute("bench.wait(300)")
        show("CAManim")

    shown = []  # back and forth with nothing changed in between: the tab shows what it already has
    for title in ["sanity check", "CAManim"] * repeats:
        nb.page.evaluate(CLICK_JS)
        nb.page.locator(".xai-workbench-tabs").get_by_text(title).click()
        handle = nb.page.wait_for_function(SHOWN_JS, arg=title, timeout=60_000, polling="raf")
        shown.append(float(handle.json_value()))
        nb.execute("bench.wait(300)")

    cancels = []
    for _ in range(repeats):
        out = nb.execute(
            "import time\n"
            "toggle = bench.view('sanity').children[0]\n"
            "bench.runner.clear_cache(); toggle.sweep(); time.sleep(1.0)\n"
            "t0 = time.perf_counter(); bench.cancel(); bench.wait(30)\n"
            "print('ms', (time.perf_counter() - t0) * 1000)"
        )
        cancels.append(float(out.split("ms", 1)[1]))
    return [
        (
            "workbench: class-bar click → 3 explorer maps + CAManim film repainted (computed)",
            computed,
            "< 300",
        ),
        ("workbench: class-bar click → 3 explorer maps + CAManim film repainted (cached)", cached, "< 300"),
        ("workbench: tab switch → shown with its results (state unchanged since)", shown, "< 50"),
        (
            "workbench: tab switch after a class change → sanity maps of the new class on screen",
            switches,
            "< 50",
        ),
        ("workbench: cancel a running sanity sweep → stopped (in the kernel)", cancels, "< 1000"),
    ]


def app_first_map(browser, model: str) -> tuple[float, float]:
    """Seconds from starting ``xai-widgets app`` to the first map painted in its page, and the CPU seconds the
    command, Voila and the kernel had used by then (close to the wall time on an otherwise idle machine)."""
    import subprocess
    import tempfile
    import time

    import psutil

    base = Path(tempfile.mkdtemp(prefix="xai-app-bench-"))
    env = harness.isolated_env(base)
    port = harness.free_port()
    log = base / "app.log"
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(harness.BIN / "xai-widgets"), "app", "--model", model, "--port", str(port)],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while "xai-widgets app:" not in log.read_text():
            if process.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError(f"the app did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", harness.local_only)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/", timeout=300_000)
        canvas = page.locator(".xai-workbench canvas.xai-heatmap-canvas").first
        canvas.wait_for(timeout=300_000)
        page.wait_for_function(
            "(c) => Number(c.dataset.maps) > 0", arg=canvas.element_handle(), timeout=300_000, polling=20
        )
        elapsed = time.monotonic() - start
        root = psutil.Process(process.pid)
        cpu = sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
        context.close()
        return elapsed, cpu
    finally:
        harness.stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes-resnet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the kernel (1: robust on a shared 2-core CPU)",
    )
    parser.add_argument("--part", choices=("all", "explorer", "workbench", "app"), default="all")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    server = None if args.part == "app" else harness.LabServer().start()
    try:
        with sync_playwright() as playwright:
            browser = harness.launch_chromium(playwright)
            rows = []
            if args.part in ("all", "workbench"):
                with harness.Lab(server, browser) as lab:
                    nb = lab.open_notebook(
                        [WORKBENCH.format(model=args.model, threads=args.threads)], name="workbench.ipynb"
                    )
                    rows.extend(workbench_latency(nb, args.repeats))
            if args.part in ("all", "workbench", "app"):
                runs = [app_first_map(browser, args.model) for _ in range(2)]
                rows.append(
                    ("`xai-widgets app`: start → first map painted", [r[0] * 1000 for r in runs], "< 10000")
                )
                rows.append(
                    (
                        "`xai-widgets app`: CPU time used by then (all its processes)",
                        [r[1] * 1000 for r in runs],
                        "–",
                    )
                )
            if args.part in ("all", "explorer"):
                rows[:0] = explorer_rows(server, browser, args)
            browser.close()
    finally:
        if server is not None:
            server.stop()
    _print(args, rows)


def explorer_rows(server: harness.LabServer, browser, args: argparse.Namespace) -> list:
    rows = []
    with harness.Lab(server, browser) as lab:
        nb = lab.open_notebook([SETUP.format(model=args.model, threads=args.threads)], name="latency.ipynb")
        nb.wait_map(nb.heatmap_canvas("saliency"))
        for method in ("saliency", "lrp_composite"):
            probe = "input_x_gradient" if method == "saliency" else method
            first, cold, cached = method_latency(nb, probe, args.repeats)
            rows.append((f"method change → heatmap painted: `{probe}` (first use)", [first], "< 300"))
            rows.append((f"method change → heatmap painted: `{probe}` (computed)", cold, "< 300"))
            rows.append((f"method change → heatmap painted: `{probe}` (cached)", cached, "< 300"))
        display = display_latency(nb, max(20, args.repeats))
        for name, times in display.items():
            rows.append((f"{name} change: handler incl. canvas repaint", times["apply"], "< 16"))
            rows.append((f"{name} change: to next animation frame", times["frame"], "< 16"))
    return rows


def _print(args: argparse.Namespace, rows: list[tuple[str, list[float], str]]) -> None:
    print(
        f"## Widget latency ({args.model}, CPU, {args.threads} torch threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {args.repeats} repeats for method changes)\n"
    )
    print("| measurement | median ms | min ms | max ms | target ms |")
    print("|---|---|---|---|---|")
    for name, times, target in rows:
        print(f"| {name} | {summary(times)} | {target} |")


if __name__ == "__main__":
    main()
