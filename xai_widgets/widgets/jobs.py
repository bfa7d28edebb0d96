"""Background computation for widgets: a result cache, latest-request-wins channels, progress and cancel.

A widget submits work on a *channel* (e.g. one per heatmap). A newer request on the same channel supersedes
the older one: the older job's progress callback raises :class:`~xai_widgets.Cancelled` at its next call,
and whatever it still returns is cached but never shown. Results are cached by a key built from everything
that determines them, so going back to an earlier choice is instant. One worker thread runs the jobs in
order, which also keeps every use of the model in one thread (hooks from two threads would interfere).

Example:
    >>> runner = JobRunner()
    >>> shown = []
    >>> job = runner.submit("view", ("square", 3), lambda progress: 3 * 3, on_result=shown.append)
    >>> runner.wait()
    True
    >>> shown
    [9]
"""

from __future__ import annotations

import collections
import html
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled, XAIError

Progress = Callable[[int, int], None]


def error_html(text: str) -> str:
    """An error message as the red HTML line every widget shows (empty text: nothing)."""
    return f"<div style='color:#a00'>{html.escape(text)}</div>" if text else ""


def show_gallery_image(state: Any, images: dict[str, Any], name: str | None) -> str:
    """Set gallery image ``name`` on an ExplanationState; the message to show ("" when it worked)."""
    if name is None:
        return ""
    try:
        state.set_image(images[name], name)
    except XAIError as error:
        return f"could not use image {name!r}: {describe_error(error)}"
    return ""


def describe_error(error: BaseException) -> str:
    """The words a widget shows for an error: the message of our own errors, type and message otherwise."""
    if isinstance(error, XAIError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@dataclass(eq=False)
class Job:
    """One submitted request. ``state`` is pending, running, done, cached, cancelled, failed, or skipped (a
    cache-only request whose key was not cached)."""

    channel: Hashable
    key: Hashable
    fn: Callable[[Progress], Any] = field(repr=False)
    on_result: Callable[[Any], None] | None = field(default=None, repr=False)
    on_error: Callable[[BaseException], None] | None = field(default=None, repr=False)
    on_progress: Callable[[int, int], None] | None = field(default=None, repr=False)
    on_cancel: Callable[[], None] | None = field(default=None, repr=False)
    state: str = "pending"
    result: Any = field(default=None, repr=False)
    error: BaseException | None = None
    cancel_requested: bool = False
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Ask the job to stop: it raises Cancelled at its next progress call (or is skipped if not started)."""
        self.cancel_requested = True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (in any state); False on timeout."""
        return self.finished.wait(timeout)


class JobRunner:
    """Runs widget computations in one background thread with a keyed LRU cache.

    Args:
        cache_size: how many results to keep.
        background: False runs each job inside :meth:`submit` (for scripts and tests; no cancel from the UI).
        progress_interval: the shortest time in seconds between two ``on_progress`` calls of one job (the
            first and the last call always go through), so a fast loop does not flood the browser.

    Callbacks run in the worker thread; a callback that raises is reported through ``on_error``.
    """

    def __init__(
        self, cache_size: int = 128, background: bool = True, progress_interval: float = 0.1
    ) -> None:
        self.cache_size = cache_size
        self.background = background
        self.progress_interval = progress_interval
        self._cache: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._latest: dict[Hashable, Job] = {}
        self._lock = threading.RLock()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: set[Job] = set()
        self._idle = threading.Condition(self._lock)

    # ------------------------------------------------------------------ cache
    def cached(self, key: Hashable) -> bool:
        """Whether a result for ``key`` is in the cache."""
        with self._lock:
            return key in self._cache

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The cached result for ``key`` (marking it recently used), or ``default``."""
        with self._lock:
            if key not in self._cache:
                return default
            self._cache.move_to_end(key)
            return self._cache[key]

    def store(self, key: Hashable, value: Any) -> None:
        """Put a result in the cache, dropping the least recently used beyond ``cache_size``."""
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------------- jobs
    def submit(
        self,
        channel: Hashable,
        key: Hashable,
        fn: Callable[[Progress], Any],
        *,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> Job:
        """Request ``fn(progress)`` for ``key`` on ``channel``; the previous request on the channel is cancelled.

        A cached key is answered at once, in the calling thread (``job.state == "cached"``). Otherwise the job
        runs in the worker; ``fn`` should call ``progress(done, total)`` now and then, which raises Cancelled
        once the job is superseded or cancelled. Only the channel's latest job calls its callbacks.
        """
        job = Job(channel, key, fn, on_result, on_error, on_progress, on_cancel)
        with self._lock:
            previous = self._latest.get(channel)
            if previous is not None:
                previous.cancel()
            self._latest[channel] = job
            hit = key in self._cache
            if hit:
                self._cache.move_to_end(key)
                job.result = self._cache[key]
                job.state = "cached"
            else:
                self._pending.add(job)
        if hit:
            job.finished.set()
            self._deliver(job, lambda: on_result and on_result(job.result))
            return job
        if self.background:
            self._start_worker()
            self._queue.put(job)
        else:
            self._run(job)
        return job

    def cancel(self, channel: Hashable | None = None) -> None:
        """Cancel the latest job of ``channel``, or of every channel."""
        with self._lock:
            jobs = list(self._latest.values()) if channel is None else [self._latest.get(channel)]
        for job in jobs:
            if job is not None and not job.finished.is_set():
                job.cancel()

    def is_latest(self, job: Job) -> bool:
        with self._lock:
            return self._latest.get(job.channel) is job and not job.cancel_requested

    def busy(self) -> bool:
        """Whether any job is pending or running."""
        with self._lock:
            return bool(self._pending)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has finished; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        """Cancel everything and stop the worker thread (after its current job)."""
        self.cancel()
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread = None

    # --------------------------------------------------------------- internals
    def _start_worker(self) -> None:
        """One daemon thread per runner: a job still running never keeps the interpreter (or kernel) alive."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, args=(self._queue,), name="xai-widgets", daemon=True
                )
                self._thread.start()

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            self._run(job)

    def _deliver(self, job: Job, callback: Callable[[], Any], reporting: bool = False) -> None:
        """Run a callback of the channel's latest job; report a failing callback through ``on_error``."""
        if not self.is_latest(job) and job.state != "cancelled":
            return
        try:
            callback()
        except Exception as error:  # a view that cannot show the result must still say why
            if job.on_error is not None and not reporting:
                self._deliver(job, lambda error=error: job.on_error(error), reporting=True)

    def _run(self, job: Job) -> None:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if job.cancel_requested:
                raise Cancelled(f"request {job.key!r} was superseded or cancelled")
            now = time.monotonic()
            if job.on_progress is not None and (now - last[0] >= self.progress_interval or done >= total):
                last[0] = now
                self._deliver(job, lambda: job.on_progress(done, total))

        try:
            if job.cancel_requested:
                raise Cancelled(f"request {job.key!r} was superseded before it started")
            job.state = "running"
            job.result = job.fn(progress)
        except Cancelled:
            job.state = "cancelled"
            if job.on_cancel is not None and self._latest_of_channel(job):
                self._deliver(job, job.on_cancel)
        except Exception as error:
            job.state, job.error = "failed", error
            if job.on_error is not None:
                self._deliver(job, lambda error=error: job.on_error(error), reporting=True)
        else:
            job.state = "done"
            self.store(job.key, job.result)
            if job.on_result is not None:
                self._deliver(job, lambda: job.on_result(job.result))
        finally:
            job.finished.set()
            with self._idle:
                self._pending.discard(job)
                self._idle.notify_all()

    def _latest_of_channel(self, job: Job) -> bool:
        """True when no newer request replaced the job (it was cancelled by :meth:`cancel`, not superseded)."""
        with self._lock:
            return self._latest.get(job.channel) is job
