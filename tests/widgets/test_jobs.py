"""JobRunner: cache, latest request wins, progress, cancel through Cancelled, errors."""

from __future__ import annotations

import threading

import pytest

from xai_widgets import Cancelled, InputError
from xai_widgets.widgets.jobs import JobRunner, describe_error


def blocking(release: threading.Event, started: threading.Event | None = None, value: object = "slow"):
    """A job that reports progress until ``release`` is set (so it can be superseded while running)."""

    def fn(progress):
        if started is not None:
            started.set()
        step = 0
        while not release.wait(0.01):
            step += 1
            progress(step, 10_000)
        return value

    return fn


@pytest.fixture
def runner():
    runner = JobRunner()
    yield runner
    runner.close()


def test_cached_results_are_answered_at_once_without_recomputing(runner):
    calls, shown = [], []
    fn = lambda progress: calls.append(1) or len(calls)  # noqa: E731
    runner.submit("a", "key", fn, on_result=shown.append)
    assert runner.wait(10)
    job = runner.submit("a", "key", fn, on_result=shown.append)
    assert job.state == "cached" and shown == [1, 1] and calls == [1]


def test_the_latest_request_on_a_channel_wins(runner):
    release, started = threading.Event(), threading.Event()
    shown, cancelled = [], []
    old = runner.submit(
        "view",
        "old",
        blocking(release, started),
        on_result=shown.append,
        on_cancel=lambda: cancelled.append(1),
    )
    assert started.wait(10)
    new = runner.submit("view", "new", lambda progress: "new", on_result=shown.append)
    assert runner.wait(10)
    assert old.state == "cancelled" and new.state == "done"
    assert shown == ["new"] and cancelled == []  # a superseded job stays silent
    release.set()


def test_other_channels_are_not_superseded(runner):
    shown = []
    runner.submit("a", 1, lambda progress: "a", on_result=shown.append)
    runner.submit("b", 2, lambda progress: "b", on_result=shown.append)
    assert runner.wait(10)
    assert sorted(shown) == ["a", "b"]


def test_cancel_stops_a_running_job_and_tells_its_view(runner):
    release, started = threading.Event(), threading.Event()
    cancelled, progress = [], []
    job = runner.submit(
        "view",
        "k",
        blocking(release, started),
        on_cancel=lambda: cancelled.append(1),
        on_progress=lambda done, total: progress.append(done),
    )
    assert started.wait(10)
    runner.cancel()
    assert job.wait(10) and job.state == "cancelled" and cancelled == [1]
    assert not runner.cached("k")
    release.set()


def test_progress_is_reported_and_throttled():
    runner = JobRunner(background=False, progress_interval=60.0)
    seen = []

    def fn(progress):
        for step in range(1, 101):
            progress(step, 100)
        return "done"

    runner.submit("v", "k", fn, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (1, 100) and seen[-1] == (100, 100) and len(seen) == 2


def test_errors_reach_the_view_and_the_runner_stays_usable(runner):
    errors, shown = [], []

    def broken(progress):
        raise InputError("the image is empty")

    job = runner.submit("v", "bad", broken, on_error=lambda e: errors.append(describe_error(e)))
    runner.wait(10)
    assert job.state == "failed" and errors == ["the image is empty"] and not runner.cached("bad")
    runner.submit("v", "good", lambda progress: 1, on_result=shown.append)
    runner.wait(10)
    assert shown == [1]


def test_a_failing_callback_is_reported_as_an_error():
    runner = JobRunner(background=False)
    errors = []

    def show(value):
        raise RuntimeError("view gone")

    runner.submit(
        "v", "k", lambda progress: 1, on_result=show, on_error=lambda e: errors.append(describe_error(e))
    )
    assert errors == ["RuntimeError: view gone"]


def test_cache_keeps_the_most_recently_used():
    runner = JobRunner(cache_size=2, background=False)
    for key in ("a", "b"):
        runner.submit("v", key, lambda progress, key=key: key)
    runner.get("a")
    runner.submit("v", "c", lambda progress: "c")
    assert runner.cached("a") and runner.cached("c") and not runner.cached("b")


def test_wait_times_out_while_a_job_runs(runner):
    release = threading.Event()
    runner.submit("v", "k", blocking(release))
    assert runner.wait(0.05) is False and runner.busy()
    release.set()
    assert runner.wait(10) and not runner.busy()


def test_a_job_superseded_before_it_starts_never_runs(runner):
    release, started = threading.Event(), threading.Event()
    calls = []
    runner.submit("first", "k1", blocking(release, started))
    assert started.wait(10)
    queued = runner.submit("second", "k2", lambda progress: calls.append(1))
    runner.submit("second", "k3", lambda progress: "latest")
    release.set()
    assert runner.wait(10)
    assert queued.state == "cancelled" and calls == []


def test_describe_error_words():
    assert describe_error(Cancelled("stop")) == "stop"
    assert describe_error(ValueError("x")) == "ValueError: x"
