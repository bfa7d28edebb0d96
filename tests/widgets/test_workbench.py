"""Workbench without a browser: one linked state across views, lazy tabs, per-view latest-wins, failures."""

from __future__ import annotations

import threading

import pytest
import torch

from xai_widgets import InputError, MethodError, Workbench
from xai_widgets.widgets import JobRunner
from xai_widgets.widgets.workbench import TABS, ViewRunner, register_tab


def pictures(n: int = 2, size: int = 32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size, generator=generator) for _ in range(n)]


@pytest.fixture
def bench(small_cnn, guard):
    """A workbench on the small CNN, computing in the calling thread; the model is checked unchanged."""
    with guard(small_cnn):
        workbench = Workbench(
            small_cnn,
            pictures(),
            methods=["saliency", "gradcam"],
            road=False,
            scores=False,
            size=64,
            background=False,
        )
        yield workbench
        workbench.close()


@pytest.fixture
def extra_tab():
    """Register test tabs for the duration of a test."""
    added: list[str] = []

    def add(name, build):
        register_tab(name, name, build)
        added.append(name)

    yield add
    for name in added:
        TABS.pop(name, None)


def test_the_scrubber_sets_the_explorers_cam_layer_and_back(bench):
    player = bench.view("camanim")
    assert player is not None and player.film is not None
    default = bench.adapter.default_cam_layer().name
    assert player.film.names[player.index] == default  # the film opens at the explorer's CAM layer
    assert bench.state.layer is None  # ... without choosing it

    player.index = 1
    chosen = player.film.names[1]
    assert bench.explorer.state.layer == chosen == bench.state.layer
    assert bench.explorer.layer_select.value == chosen
    assert bench.explorer.explanation("gradcam").layer == chosen

    bench.explorer.layer_select.value = player.film.names[0]
    assert player.index == 0


def test_a_class_bar_moves_every_view_to_that_class(bench):
    explorer, player = bench.explorer, bench.view("camanim")
    clicked = 2
    explorer.bars.selected = [clicked]
    target = explorer._ordered[clicked]
    assert bench.state.target == target
    assert player.state.target == target and player.target_select.value == target
    assert int(player.film.target[0]) == target
    assert int(explorer.explanation("saliency").target[0]) == target

    toggle = bench.show("sanity").children[0]  # a hidden tab catches up when shown
    assert toggle.state.target == target
    assert int(toggle.explorer.explanation("saliency").target[0]) == target
    assert bench.show("maximizer").class_select.value == target  # its objective follows too
    backtrace = bench.show("backtrace")
    assert int(backtrace.explanation.target[0]) == target
    assert "start relevance 1" in backtrace.flow.summary.value


def test_the_sanity_toggles_randomization_shows_in_every_map(bench):
    player = bench.view("camanim")
    trained_film = player.film.maps.clone()
    trained = bench.explorer.explanation("saliency").attribution.clone()

    toggle = bench.show("sanity").children[0]
    toggle.step = 1
    toggle.randomize(True)
    name = toggle.randomization_name()
    assert bench.state.randomization == name == bench.explorer.state.randomization
    randomized = bench.explorer.explanation("saliency")
    assert not torch.allclose(randomized.attribution, trained)

    bench.show("camanim")
    assert player.state.randomization == name
    assert not torch.allclose(player.film.maps, trained_film)

    toggle_tab = bench.show("sanity").children[0]
    toggle_tab.randomize(False)
    bench.show("camanim")
    torch.testing.assert_close(player.film.maps, trained_film)  # back to the trained film (cached)


def test_tabs_are_lazy_nothing_is_built_or_computed_for_a_hidden_view(small_cnn, monkeypatch):
    channels: list = []  # the channels of the jobs that compute (a cached answer is not recorded)
    submit = JobRunner.submit

    def record(self, channel, key, fn, **callbacks):
        if not self.cached(key):
            channels.append(channel)
        return submit(self, channel, key, fn, **callbacks)

    monkeypatch.setattr(JobRunner, "submit", record)
    bench = Workbench(small_cnn, pictures(), methods=["saliency"], road=False, scores=False, background=False)
    assert bench.visible == ["explorer", "camanim"]
    assert bench.view("sanity") is None and bench.view("actspec") is None
    assert {c[0] for c in channels} == {"explorer", "camanim"}

    bench.show("sanity")
    bench.show("camanim")
    channels.clear()
    bench.image_select.value = bench.image_select.options[1]
    assert channels and {c[0] for c in channels} == {"explorer", "camanim"}  # not the hidden sanity tab
    channels.clear()
    bench.show("sanity")  # shown: it catches up, from the cache where it can
    assert {c[0] for c in channels} == {"sanity"}


def test_a_hidden_view_follows_from_the_cache_so_showing_it_needs_no_kernel_work(small_cnn):
    """Where every result a hidden view needs is cached, it follows the master at once (showing its tab is a
    relayout); where one is missing it keeps its previous state and results, and catches up when shown."""
    bench = Workbench(small_cnn, pictures(), methods=["saliency"], road=False, scores=False, background=False)
    sanity = bench.show("sanity").children[0].explorer
    bench.state.target = 1
    bench.state.target = 2  # the sanity view computed both classes
    bench.show("camanim")
    bench.state.target = 1  # the sanity view's results for class 1 are cached: it follows while hidden
    assert sanity.state.target == 1 and int(sanity.explanation("saliency").target[0]) == 1
    bench.state.target = 4  # class 4 was never computed: the hidden view stays on class 1, and its map
    assert sanity.state.target == 1 and int(sanity.explanation("saliency").target[0]) == 1
    assert bench.state.target == 4  # (the hidden view going back does not move the master)
    bench.show("sanity")
    assert sanity.state.target == 4 and int(sanity.explanation("saliency").target[0]) == 4


def test_in_the_background_every_visible_view_gets_the_latest_result(small_cnn):
    bench = Workbench(small_cnn, pictures(), methods=["saliency", "gradcam"], road=False, size=64)
    bench.image_select.value = bench.image_select.options[1]
    bench.state.target = 3
    assert bench.wait(120)
    for method in ("saliency", "gradcam"):
        shown = bench.explorer.explanation(method)
        assert shown is not None and int(shown.target[0]) == 3
        assert bench.explorer.views[method].status == ""  # not "cancelled"
    player = bench.view("camanim")
    assert player.film is not None and int(player.film.target[0]) == 3
    torch.testing.assert_close(player.film.image[0], bench.state.picture)
    bench.close()


def test_latest_request_wins_per_view_and_a_new_state_supersedes_every_view(small_cnn):
    base = JobRunner()
    release = threading.Event()

    def slow(progress):
        while not release.wait(0.01):
            progress(0, 1)
        return 1

    one, two = ViewRunner(base, "one"), ViewRunner(base, "two")
    first = one.submit("work", "a", slow)
    second = two.submit("work", "b", slow)
    assert not first.cancel_requested  # the same channel name in another view does not supersede
    newer = one.submit("work", "c", slow)
    assert first.cancel_requested and not second.cancel_requested
    two.cancel()
    assert second.cancel_requested and not newer.cancel_requested
    release.set()
    assert base.wait(10)
    assert (first.state, second.state, newer.state) == ("cancelled", "cancelled", "done")
    base.close()

    bench = Workbench(small_cnn, pictures(), methods=["saliency"], road=False, scores=False, background=False)
    bench.show("sanity")
    hidden = bench.slots["sanity"].runner
    release.clear()
    base = JobRunner()
    hidden.base = base  # a long job of the (now hidden) sanity view, still running
    bench.show("camanim")
    stale = hidden.submit("sweep", "stale", slow)
    bench.image_select.value = bench.image_select.options[1]
    assert stale.wait(5) and stale.state == "cancelled"
    release.set()
    base.close()


def test_a_failing_view_shows_its_error_and_the_others_keep_working(small_cnn, guard, extra_tab):
    def broken_build(context):
        raise RuntimeError("cannot build this view")

    def fragile_build(context):
        explorer = context.explorer(["saliency"])

        def fail(change):
            if change["new"] == 1:
                raise RuntimeError("this view cannot show class 1")

        explorer.state.observe(fail, names="target")
        return explorer

    extra_tab("broken", broken_build)
    extra_tab("fragile", fragile_build)
    with guard(small_cnn):
        bench = Workbench(
            small_cnn,
            pictures(),
            methods=["saliency"],
            tabs=["broken", "fragile", "camanim"],
            road=False,
            background=False,
        )
        assert bench.view("broken") is None
        assert "cannot build this view" in bench.slots["broken"].message.value
        bench.show("fragile")
        bench.explorer.state.target = 1
        assert "cannot show class 1" in bench.slots["fragile"].message.value
        assert bench.explorer.explanation("saliency") is not None
        assert bench.explorer.views["saliency"].error == ""
        player = bench.show("camanim")
        assert player.state.target == 1 and int(player.film.target[0]) == 1
        bench.show("fragile")
        bench.explorer.state.target = 2
        assert bench.slots["fragile"].message.value == ""  # it recovers on the next change


def test_bad_arguments_raise_clear_errors(small_cnn):
    with pytest.raises(InputError, match="unknown workbench tab"):
        Workbench(small_cnn, pictures(), tabs=["nope"], background=False)
    with pytest.raises(MethodError, match="no_such_method"):
        Workbench(small_cnn, pictures(), methods=["no_such_method"], background=False)
    bench = Workbench(small_cnn, pictures(), methods=["saliency"], road=False, scores=False, background=False)
    with pytest.raises(InputError, match="no tab"):
        bench.show("explorer")
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        bench.set_image(torch.full((3, 8, 8), 5.0), "bad")
    assert "bad" in bench.message.value and bench.image_select.value == bench.image_select.options[0]


def test_the_evaluation_tab_evaluates_a_users_model_on_the_shared_runner(small_cnn, guard):
    """A model outside the zoo is evaluated in-process, taking turns with the other views on one runner."""
    with guard(small_cnn):
        bench = Workbench(small_cnn, pictures(), methods=["saliency"], road=False, background=False)
        board = bench.show("evaluation")
        assert board.runner is bench.slots["evaluation"].runner
        board.run()
        assert board.result is not None and len(board.result.errors) == 0
        assert set(board.result.table["method"]) == {"saliency"} and len(board.result.table) > 0
