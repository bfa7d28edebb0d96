"""InteractionBars: in the kernel (computed in the calling thread) and in JupyterLab in headless Chromium.

The kernel-side tests check what the widget shows against the engine; the browser tests (one notebook for
the module, run in file order) check that the bars render, that clicking a bar lists that order's subsets,
and that changing the class redraws the bars.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from xai_widgets import InputError
from xai_widgets.actspec import spectroscopy
from xai_widgets.widgets import AttributionExplorer
from xai_widgets.widgets.interaction_bars import InteractionBars


def digit_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(196, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 10)
    ).eval()


def digit(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 14, 14, generator=generator)


def test_shows_the_engine_spectrum_its_subsets_and_unit_weights(guard):
    model = digit_mlp()
    with guard(model):
        bars = InteractionBars(model, digit(), target=4, n_units=6, f="probability", background=False)
        spectrum = spectroscopy(model, "2", inputs=digit()[None], target=4, n_units=6, f="probability")
        assert bars.spectrum.units == spectrum.units
        torch.testing.assert_close(bars.spectrum.dense, spectrum.dense)
        signed = spectrum.signed_order_weights()
        shown = [int(k) for k in bars.positive_bars.x]  # orders up to the last one that carries weight
        assert shown == list(range(1, len(shown) + 1))
        assert list(bars.negative_bars.x) == list(bars.positive_bars.x)
        assert all(sum(signed[k]) <= 1e-9 * spectrum.total_weight for k in range(len(shown) + 1, 7))
        assert list(bars.positive_bars.y) == pytest.approx([signed[k][0] for k in shown], abs=1e-15)
        assert list(bars.negative_bars.y) == pytest.approx([-signed[k][1] for k in shown], abs=1e-15)
        assert f"f̂(∅) = {spectrum.value(()):+.4g}" in bars.empty_label.value

        bars.select_order(2)
        assert [subset for _, subset in bars.table.options] == [s for s, _ in spectrum.top(12, order=2)]
        first = bars.table.options[0][1]
        bars.table.value = first
        views = bars.units_box.children
        assert [v.title for v in views] == [f"unit {u} input weights" for u in first]
        weights = model[1].weight.detach()[list(first)].view(-1, 14, 14)
        for view, expected in zip(views, weights):
            assert view.values_shape == [14, 14]
            assert view.map == pytest.approx(expected.numpy(), abs=2e-3 * float(expected.abs().max()))


def test_follows_the_explorers_target_and_search_mode():
    model = digit_mlp()
    explorer = AttributionExplorer(
        model, digit(), methods=["saliency"], input_size=(1, 14, 14), background=False
    )
    bars = InteractionBars(explorer, n_units=5, f="logit")
    assert bars.spectrum.options["target"] == explorer.predicted
    explorer.state.target = 7
    assert bars.class_select.value == 7 and bars.spectrum.options["target"] == 7
    bars.class_select.value = 2
    assert explorer.state.target == 2 and bars.spectrum.options["target"] == 2
    # the logit is linear in the units above a ReLU: only orders 0 and 1 carry weight
    assert bars.spectrum.order_weights()[2] == pytest.approx(0.0, abs=1e-12)
    bars.mode_select.value = "search"
    assert bars.units_slider.value == 24 and bars.spectrum.method == "search"
    assert {len(s) for s, _ in bars.spectrum.coefficients} <= {0, 1}


def test_compare_overlays_the_models_and_errors_show_in_the_widget():
    models = {"a": digit_mlp(), "b": nn.Sequential(*list(digit_mlp())[:-1], nn.Linear(24, 10))}
    inputs = torch.rand(4, 1, 14, 14, generator=torch.Generator().manual_seed(1))
    bars = InteractionBars(
        models["a"], digit(), inputs=inputs, n_units=4, f="probability", compare=models, background=False
    )
    bars.over_select.value = "inputs"
    assert bars.spectrum.options["inputs"] == 4
    assert list(bars.compared) == ["a", "b"] and len(bars.compare_lines.y) == 2
    assert list(bars.compare_lines.labels) == ["a", "b"] and list(bars.compare_axis.tick_values) == list(
        bars.compare_lines.x
    )  # whole orders only
    for name in ("a", "b"):  # the legend sits below the chart, with each model's mean order
        assert f"{name}: mean order {bars.compared[name].mean_order():.2f}" in bars.compare_legend.value
    shares = bars.compared["a"].order_shares()
    assert list(bars.compare_lines.y[0]) == pytest.approx([shares.get(k, 0.0) for k in bars.compare_lines.x])
    with pytest.raises(InputError, match="switchable units"):
        InteractionBars(models["a"], digit(), layer="4", background=False)


def test_a_recomputing_chart_is_dimmed_and_cancel_stops_it():
    model = digit_mlp()
    explorer = AttributionExplorer(model, digit(), methods=["saliency"], input_size=(1, 14, 14))
    assert explorer.wait(60)
    bars = InteractionBars(explorer, n_units=4, f="logit")
    assert bars.wait(60) and "xai-stale" not in bars.figure._dom_classes
    release = threading.Event()
    explorer.runner.submit("busy", "busy", lambda progress: release.wait(60))  # hold the worker
    bars.class_select.value = 3
    assert "xai-stale" in bars.figure._dom_classes and bars.status.value == "computing…"
    bars.cancel_button.click()
    release.set()
    assert bars.wait(60)
    assert "xai-stale" not in bars.figure._dom_classes and "cancelled" in bars.status.value
    bars.units_slider.value = 3  # a new request computes and shows, undimmed
    assert bars.wait(60) and bars.spectrum.n == 3 and "xai-stale" not in bars.figure._dom_classes


CELLS = [
    """\
import torch
from torch import nn
from xai_widgets.widgets.interaction_bars import InteractionBars

torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(196, 24), nn.ReLU(), nn.Linear(24, 10)).eval()
with torch.no_grad():
    model[3].weight.mul_(25)  # a saturated softmax: the units interact
image = torch.rand(1, 14, 14, generator=torch.Generator().manual_seed(0))
""",
    """\
bars = InteractionBars(model, image, target=2, n_units=6, f="probability")
bars.wait(120)
bars
""",
]


@pytest.fixture(scope="module")
def bars_nb(new_lab):
    with new_lab() as lab:
        yield lab.open_notebook(CELLS, name="interaction_bars.ipynb")


def bar_heights(nb) -> list[float]:
    return nb.page.locator(".xai-actspec-bars rect.bar").evaluate_all(
        "(rects) => rects.map((r) => Number(r.getAttribute('height')))"
    )


@pytest.mark.browser
def test_bars_render(bars_nb):
    nb = bars_nb
    orders = nb.eval("len(bars._orders)")
    assert orders >= 4
    nb.page.wait_for_function(
        "(n) => document.querySelectorAll('.xai-actspec-bars rect.bar').length === n",
        arg=2 * orders,
        timeout=60_000,
    )  # a positive and a negative bar per order
    heights = bar_heights(nb)
    assert sum(h > 1 for h in heights) >= 4, heights
    assert "6 units" in nb.page.locator(".xai-actspec-bars .mainheading").text_content()
    assert "f̂(∅)" in nb.page.locator(".xai-actspec-empty").inner_text()


@pytest.mark.browser
def test_clicking_a_bar_lists_that_orders_subsets(bars_nb):
    nb = bars_nb
    weights = nb.eval("[bars.spectrum.signed_order_weights()[k][0] for k in bars._orders]")
    order = 2 + max(range(1, len(weights)), key=lambda i: weights[i]) - 1  # strongest positive order above 1
    nb.page.locator(".xai-actspec-bars rect.bar").nth(order - 1).click()  # positive bars first, order 1 first
    nb.page.locator(".xai-actspec", has_text=f"order {order}:").wait_for(timeout=60_000)
    rows = nb.page.locator(".xai-actspec-table select option")
    assert rows.count() == 12
    assert rows.first.inner_text().startswith("{") and rows.first.inner_text().count(",") == order - 1
    assert nb.eval("bars.order") == order


@pytest.mark.browser
def test_changing_the_class_redraws_the_bars(bars_nb):
    nb = bars_nb
    before = bar_heights(nb)
    nb.page.locator(".xai-actspec-class select").select_option(label="class 4")
    nb.page.wait_for_function(
        "(before) => { const now = [...document.querySelectorAll('.xai-actspec-bars rect.bar')]"
        ".map((r) => Number(r.getAttribute('height'))); return now.length !== before.length || "
        "now.some((h, i) => Math.abs(h - before[i]) > 0.5); }",
        arg=before,
        timeout=120_000,
    )
    assert nb.eval("bars.spectrum.options['target']") == 4
    assert "class 4" in nb.page.locator(".xai-actspec-bars .mainheading").text_content()


@pytest.mark.browser
def test_a_stale_chart_is_dimmed_in_the_page(bars_nb):
    nb = bars_nb
    opacity = "() => Number(getComputedStyle(document.querySelector('.xai-actspec-bars')).opacity)"
    assert nb.page.evaluate(opacity) == 1
    nb.execute("bars.figure.add_class('xai-stale')")
    nb.page.wait_for_function(f"() => ({opacity})() < 0.5", timeout=10_000)
    nb.execute("bars.figure.remove_class('xai-stale')")
    nb.page.wait_for_function(f"() => ({opacity})() === 1", timeout=10_000)
