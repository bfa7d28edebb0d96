"""Widget latency in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Measures, on a zoo model on the CPU:
- method change → new heatmap painted: from the ``change`` event of the explorer's method list (in the page) to
  the end of the first paint of the new view's map (``data-map-painted-at``), with an empty cache (the method
  runs) and with the result cached; targets: under 300 ms;
- display changes in the browser (opacity slider, colormap menu): the time the view's event handler takes to
  repaint the canvas, and the time to the next animation frame; target: under 16 ms (one frame).

Times are taken with ``performance.now()`` inside the page, so Playwright's own round trips are not counted.
Usage: ``python benchmarks/widget_latency.py [--model shapes-resnet] [--repeats 5]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
from pathlib import Path

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
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    server = harness.LabServer().start()
    try:
        with sync_playwright() as playwright:
            browser = harness.launch_chromium(playwright)
            with harness.Lab(server, browser) as lab:
                nb = lab.open_notebook(
                    [SETUP.format(model=args.model, threads=args.threads)], name="latency.ipynb"
                )
                nb.wait_map(nb.heatmap_canvas("saliency"))
                rows = []
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
            browser.close()
    finally:
        server.stop()

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
