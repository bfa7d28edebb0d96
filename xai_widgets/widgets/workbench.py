"""Workbench: every view of the package on one linked state, for a workshop or an afternoon of debugging.

The explorer (picture, top predictions, maps side by side) stays on top; the other views live in tabs below
it (CAManim, the sanity check, Activation Spectroscopy's interaction orders, DLBacktrace, activation
maximization, the evaluation board, and every view registered with :func:`register_tab`). They follow one master
:class:`~xai_widgets.widgets.state.ExplanationState`:

- each view keeps its own ExplanationState; a change a view makes (a class bar clicked, the randomization
  switched on) is copied to the master, and the master is copied to every *visible* view. A hidden view
  follows only where its results are all cached, else it is brought up to date when shown, so nothing is
  computed for a view nobody sees (lazy tabs); a tab's view is built the first time it is shown;
- choosing a layer in the CAManim scrubber sets the explorer's CAM layer (and a layer chosen in the explorer
  moves the scrubber);
- all views share one :class:`~xai_widgets.widgets.jobs.JobRunner` (one worker thread uses the model, one
  cache), each through its own :class:`ViewRunner`: the latest request wins within a view, never across
  views, and a new state cancels every other view's stale work;
- a view that fails (to build, or on a change) shows its error in its own place; the others go on.

Adding a view is one line: ``register_tab("name", "title", build)`` where ``build(context)`` returns the
widget (see :class:`ViewContext`); ``following("module:Class")`` builds any view that takes
``(model, state=..., background=...)`` and keeps its work in ``.runner``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as w
import torch
from torch import Tensor, nn

from ..errors import InputError, XAIError
from ..model import ModelAdapter
from ..registry import get_method
from .explorer import AttributionExplorer, gallery, load_model
from .jobs import Job, JobRunner, describe_error, error_html
from .state import ExplanationState

LINKED = (
    "picture",
    "image_name",
    "target",
    "layer",
    "params",
    "randomization",
    "options",
    "normalization",
    "percentile",
)
"""The traits every view shares; ``methods`` stays each view's own choice."""

STALE = frozenset(("picture", "target", "layer", "params", "randomization", "options"))
"""A change of one of these makes results computed before it stale."""


# ---------------------------------------------------------------------------------------------- runners
class ViewRunner:
    """One view's window on the workbench's shared :class:`JobRunner`.

    Channels are prefixed with the view's name, so the latest request wins within the view and never
    cancels another view's work; :meth:`cancel` without a channel cancels this view's work only. The cache and
    the worker thread are shared (one thread uses the model; a map computed for one view is instant in another).

    Args:
        runner: the shared runner.
        name: the view's name (channel prefix).
    """

    def __init__(self, runner: JobRunner, name: str) -> None:
        self.base = runner
        self.name = name
        self._channels: set[Hashable] = set()
        self.cache_only = False
        self.missed = False

    @property
    def background(self) -> bool:
        return self.base.background

    def submit(self, channel: Hashable, key: Hashable, fn: Callable[..., Any], **callbacks: Any) -> Job:
        """:meth:`JobRunner.submit` on this view's ``channel``. With ``cache_only`` set (a hidden view being
        brought up to date), a key that is not cached is not computed: the request is dropped and ``missed``
        set."""
        self._channels.add(channel)
        if self.cache_only and not self.base.cached(key):
            self.missed = True
            job = Job((self.name, channel), key, fn, state="skipped")
            job.finished.set()
            return job
        return self.base.submit((self.name, channel), key, fn, **callbacks)

    def cancel(self, channel: Hashable | None = None) -> None:
        """Cancel the latest job of ``channel``, or of every channel of this view."""
        for name in list(self._channels) if channel is None else [channel]:
            self.base.cancel((self.name, name))

    def cached(self, key: Hashable) -> bool:
        return self.base.cached(key)

    def get(self, key: Hashable, default: Any = None) -> Any:
        return self.base.get(key, default)

    def store(self, key: Hashable, value: Any) -> None:
        self.base.store(key, value)

    def clear_cache(self) -> None:
        self.base.clear_cache()

    def is_latest(self, job: Job) -> bool:
        return self.base.is_latest(job)

    def wait(self, timeout: float | None = None) -> bool:
        return self.base.wait(timeout)

    def close(self) -> None:
        self.cancel()


# ---------------------------------------------------------------------------------------- the tab registry
@dataclass
class ViewContext:
    """What a tab's ``build`` gets: the model, the pictures, and the runner its view must use.

    A view built here keeps an ExplanationState on ``adapter`` (its ``.state``, or the one
    :meth:`explorer`/:meth:`new_state` made); the workbench links it to the others.
    """

    adapter: ModelAdapter
    runner: ViewRunner
    size: int
    background: bool
    options: dict[str, Any]
    pictures: Callable[[], Tensor]
    methods: Callable[[], list[str]]
    state: ExplanationState | None = None

    def new_state(self) -> ExplanationState:
        """A fresh state for the view (it is linked once the view is built)."""
        self.state = ExplanationState(self.adapter)
        return self.state

    def explorer(self, methods: Iterable[str] | None = None, **options: Any) -> AttributionExplorer:
        """An AttributionExplorer working through this context's runner, without its own picture controls
        (the workbench chooses the picture); its state becomes the view's state."""
        explorer = AttributionExplorer(
            self.adapter, None, methods, size=self.size, background=self.background, runner=self.runner,
            **options,
        )  # fmt: skip
        return self.adopt(explorer)

    def adopt(self, view: Any) -> Any:
        """Take a view built with ``runner=`` this context's runner (and no picture yet): its state becomes the
        view's state, and its own picture controls are hidden (the workbench chooses the picture)."""
        for control in ("image_select", "upload"):
            if hasattr(view, control):
                getattr(view, control).layout.display = "none"
        self.state = view.state
        return view


Builder = Callable[[ViewContext], w.Widget]


@dataclass(frozen=True)
class Tab:
    """A view of the workbench: a name, a tab title and how to build it (a callable, or ``"module:function"``
    imported when the tab is first shown)."""

    name: str
    title: str
    build: Builder | str

    def builder(self) -> Builder:
        return self.build if callable(self.build) else _import(self.build)


def _import(path: str) -> Any:
    """The object at ``"module:attribute"``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


TABS: dict[str, Tab] = {}
"""The registry of views, in tab order; :func:`register_tab` adds one."""


def register_tab(name: str, title: str, build: Builder | str) -> Tab:
    """Add (or replace) a workbench view; ``build(context: ViewContext)`` returns its widget."""
    TABS[name] = Tab(name, title, build)
    return TABS[name]


def _camanim(context: ViewContext) -> w.Widget:
    from .camanim_player import CAManimPlayer

    state = context.new_state()
    road = context.options.get("road", True)
    return CAManimPlayer(
        context.adapter, state=state, runner=context.runner, road=road, size=max(context.size, 256)
    )


def _sanity(context: ViewContext) -> w.Widget:
    from .sanity_toggle import DEFAULT_METHODS, SanityToggle

    explorer = context.explorer([m for m in DEFAULT_METHODS if m in _registered()])
    toggle = SanityToggle(explorer, scores=context.options.get("scores", True))
    return w.VBox([toggle, explorer.figure])


def _actspec(context: ViewContext) -> w.Widget:
    from .interaction_bars import InteractionBars

    return context.adopt(
        InteractionBars(context.adapter, background=context.background, runner=context.runner)
    )


def following(path: str, **options: Any) -> Builder:
    """A builder for a view class that follows a state: ``cls(model, state=..., background=..., **options)``
    (``path`` is ``"module:Class"``, imported when the tab is first shown), given the workbench's runner as
    ``runner=``."""

    def build(context: ViewContext) -> w.Widget:
        view_class = _import(path)
        view = view_class(
            context.adapter,
            state=context.new_state(),
            background=context.background,
            runner=context.runner,
            **options,
        )
        return context.adopt(view)

    return build


class BacktraceView(w.VBox):
    """DLBacktrace on a state's picture and class: the contrastive maps (towards the class, towards the other
    classes, their difference) above the relevance passed on and absorbed at every node (the ledger), so
    conservation can be read off; it follows the state's randomization too.

    Args:
        model: an ``nn.Module`` classifier, a ModelAdapter or a zoo name.
        state: the ExplanationState to follow (default: a new one; set a picture with ``state.set_image``).
        size: width of each map; background: compute in a background thread.
        runner: a :class:`JobRunner` to share with other views (default: a new one).
    """

    METHOD = "backtrace_contrastive"

    def __init__(
        self,
        model: nn.Module | ModelAdapter | str,
        *,
        state: ExplanationState | None = None,
        size: int = 160,
        background: bool = True,
        runner: JobRunner | None = None,
    ) -> None:
        from .feature_bars import ContrastivePair, RelevanceFlow

        self.adapter = load_model(model) if state is None else state.adapter
        self.state = state if state is not None else ExplanationState(self.adapter)
        self.runner = runner if runner is not None else JobRunner(background=background)
        self.explanation: Any = None
        self.pair = ContrastivePair(size=size)
        self.flow = RelevanceFlow()
        self.status = w.HTML()
        self.message = w.HTML()
        self.message.add_class("xai-backtrace-error")
        super().__init__([self.status, self.message, self.pair, self.flow])
        self.add_class("xai-backtrace")
        self.state.observe(lambda _: self.request(), names=["picture", "target", "randomization", "options"])
        self.request()

    def request(self) -> None:
        """Compute (or take from the cache) the contrastive backtrace of the current picture and class."""
        if self.state.picture is None:
            return
        try:
            key, compute = self.state.request(self.METHOD)
        except XAIError as error:
            self.message.value = error_html(describe_error(error))
            return
        if not self.runner.cached(key):
            self.status.value = "<small>computing DLBacktrace…</small>"
        self.runner.submit(
            "backtrace",
            key,
            compute,
            on_result=self._show,
            on_error=self._fail,
            on_cancel=lambda: setattr(self.status, "value", "<small>cancelled</small>"),
        )

    def wait(self, timeout: float | None = None) -> bool:
        return self.runner.wait(timeout)

    def _show(self, explanation: Any) -> None:
        self.explanation = explanation
        self.pair.show(explanation, image=self.state.display_picture())
        self.flow.show(explanation)
        self.status.value = self.message.value = ""

    def _fail(self, error: BaseException) -> None:
        self.status.value = ""
        self.message.value = error_html(describe_error(error))


def _evaluation(context: ViewContext) -> w.Widget:
    """The evaluation board on the workbench's pictures and the explorer's methods (ROAD). A zoo model is
    evaluated on its own copy, loaded by name, in the board's own thread, so the other views stay responsive;
    any other model is evaluated in-process on the workbench's runner, taking turns with the other views (the
    model is never used by two threads at once)."""
    from .. import zoo
    from .evaluation_board import EvaluationBoard

    context.new_state()  # the board evaluates a data set: it does not follow the shown picture
    own_copy = context.adapter.name in zoo.names()
    return EvaluationBoard(
        context.adapter.name if own_copy else context.adapter,
        context.pictures(),
        context.methods(),
        ("road",),
        background=context.background,
        runner=None if own_copy else context.runner,
    )


def _registered() -> set[str]:
    from ..registry import methods

    return {info.name for info in methods()}


register_tab("camanim", "CAManim", _camanim)
register_tab("sanity", "sanity check", _sanity)
register_tab("actspec", "interaction orders", _actspec)
register_tab("backtrace", "DLBacktrace", following("xai_widgets.widgets.workbench:BacktraceView"))
register_tab(
    "maximizer", "activation maximization", following("xai_widgets.widgets.maximizer:ActivationMaximizer")
)
register_tab("evaluation", "evaluation", _evaluation)


# ------------------------------------------------------------------------------------------- workbench
class _Slot:
    """One view of the workbench: its runner, its widget and state once built, and where errors show."""

    def __init__(self, tab: Tab, runner: ViewRunner) -> None:
        self.tab = tab
        self.runner = runner
        self.widget: w.Widget | None = None
        self.state: ExplanationState | None = None
        self.message = w.HTML()
        self.message.add_class("xai-workbench-error")
        self.box = w.VBox([self.message])
        self.box.add_class(f"xai-workbench-{tab.name}")
        self.failed = False

    def show_error(self, text: str) -> None:
        self.message.value = error_html(text)


def _same(a: Any, b: Any) -> bool:
    """Equal for linking: tensors and parameter dicts by identity, the rest by value."""
    if isinstance(a, (Tensor, dict)) or isinstance(b, (Tensor, dict)):
        if (
            isinstance(a, dict)
            and isinstance(b, dict)
            and not any(isinstance(v, Tensor) for v in (*a.values(), *b.values()))
        ):
            return a == b
        return a is b
    return a == b


class Workbench(w.VBox):
    """The explorer and every other view of the package on one linked state, the others in lazy tabs.

    Args:
        model: an ``nn.Module`` classifier, a ModelAdapter or a zoo name (``"shapes-resnet"``).
        images: a picture or a gallery (a list, or a name → picture mapping); more can be uploaded.
        methods: the explorer's methods (default: saliency, integrated_gradients, gradcam where registered).
        target: class index, or None for the predicted class; layer: the CAM layer (None: the default).
        tabs: names from :data:`TABS` to show, in order (default: all registered).
        road: the CAManim tab scores every layer with ybROAD (a few seconds per picture on the zoo models).
        scores: the sanity tab shows each map's input alignment and sufficiency (a few dozen forwards each).
        size: display width of each map; background: compute in a background thread (False: in each call).
        **model_options: labels, preprocess, mean, std, input_size for a plain ``nn.Module``.

    Example:
        >>> bench = Workbench("shapes-resnet", make_shapes(4, seed=0).images)  # doctest: +SKIP
        >>> bench.show("camanim"); bench.wait()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter | str,
        images: Any = None,
        *,
        methods: Iterable[str] | None = None,
        target: int | None = None,
        layer: str | None = None,
        tabs: Sequence[str] | None = None,
        road: bool = True,
        scores: bool = True,
        size: int = 200,
        background: bool = True,
        **model_options: Any,
    ) -> None:
        self.adapter = load_model(model, **model_options)
        names = list(TABS) if tabs is None else list(tabs)
        unknown = [name for name in names if name not in TABS]
        if unknown:
            raise InputError(f"unknown workbench tab(s) {', '.join(unknown)}; registered: {', '.join(TABS)}")
        if layer is not None:
            layer = self.adapter.resolve_layer(layer).name
        methods = None if methods is None else list(methods)
        for method in methods or ():
            get_method(method)  # a misspelt method raises here, naming the registered ones
        self.state = ExplanationState(self.adapter, target=target, layer=layer)
        self.runner = JobRunner(background=background)
        self.size = int(size)
        self._options = {"road": bool(road), "scores": bool(scores)}
        self._images = gallery(images)
        self._source: _Slot | None = None
        self._moving_scrubber = False

        self.image_select = w.Dropdown(description="picture", options=list(self._images))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.cancel_button = w.Button(
            description="cancel all", icon="stop", tooltip="cancel the work of every view"
        )
        self.message = w.HTML()
        self.message.add_class("xai-workbench-message")

        self.explorer_slot = _Slot(
            Tab("explorer", "explorer", lambda c: c.explorer(methods)), self._runner("explorer")
        )
        self.slots: dict[str, _Slot] = {"explorer": self.explorer_slot}
        for name in names:
            self.slots[name] = _Slot(TABS[name], self._runner(name))
        self.tab = w.Tab(children=[self.slots[n].box for n in names], titles=[TABS[n].title for n in names])
        self.tab.add_class("xai-workbench-tabs")
        self.tab.selected_index = None
        self._tab_names = names

        super().__init__(
            [
                w.HBox([self.image_select, self.upload, self.cancel_button]),
                self.message,
                self.explorer_slot.box,
                self.tab,
            ]
        )
        self.add_class("xai-workbench")

        self.state.observe(self._on_master, names=list(LINKED))
        self.image_select.observe(self._on_image_choice, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.tab.observe(self._on_tab, names="selected_index")

        self._build(self.explorer_slot)
        if self._images:
            self._on_image_choice({"new": self.image_select.value})
        else:
            self._say("no picture yet: upload one")
        if names:
            self.tab.selected_index = 0

    # ------------------------------------------------------------------ public
    @property
    def explorer(self) -> AttributionExplorer:
        return self.explorer_slot.widget

    def view(self, name: str) -> w.Widget | None:
        """The widget of view ``name`` (None while its tab has not been shown)."""
        if name not in self.slots:
            raise InputError(f"no view {name!r} in this workbench; it has {', '.join(self.slots)}")
        return self.slots[name].widget

    def show(self, name: str) -> w.Widget | None:
        """Select tab ``name`` (building its view the first time) and return its widget."""
        if name not in self._tab_names:
            raise InputError(f"no tab {name!r} in this workbench; it has {', '.join(self._tab_names)}")
        self.tab.selected_index = self._tab_names.index(name)
        return self.slots[name].widget

    @property
    def visible(self) -> list[str]:
        """The names of the views on screen: the explorer and the selected tab."""
        index = self.tab.selected_index
        return ["explorer"] + ([] if index is None else [self._tab_names[index]])

    def set_image(self, image: Any, name: str | None = None) -> None:
        """Add ``image`` to the pictures and explain it in every visible view; a bad one raises InputError."""
        name = name or next(iter(gallery(image)))
        try:
            self.state.set_image(image, name)
        except InputError as error:
            self._say(f"could not use picture {name!r}: {describe_error(error)}")
            raise
        self._say("")
        self._images[name] = image
        if name not in self.image_select.options:
            self.image_select.options = [*self.image_select.options, name]
        with self.image_select.hold_trait_notifications():
            self.image_select.value = name

    def cancel(self) -> None:
        """Cancel the work of every view; the views keep what they show."""
        self.runner.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested computation has finished (for scripts and tests)."""
        return self.runner.wait(timeout)

    def close(self) -> None:
        """Cancel every view's work, stop the worker thread and close the widget."""
        if hasattr(self, "runner"):
            self.runner.close()
        super().close()

    # ----------------------------------------------------------------- linking
    def _runner(self, name: str) -> ViewRunner:
        return ViewRunner(self.runner, name)

    def _build(self, slot: _Slot) -> None:
        """Build a view the first time it is shown; a failure shows in its place, the others go on."""
        if slot.widget is not None or slot.failed:
            return
        context = ViewContext(
            self.adapter,
            slot.runner,
            self.size,
            self.runner.background,
            self._options,
            pictures=self._pictures,
            methods=lambda: list(self.explorer.state.methods),
        )
        try:
            widget = slot.tab.builder()(context)
            state = context.state if context.state is not None else getattr(widget, "state", None)
            if not isinstance(state, ExplanationState) or state.adapter is not self.adapter:
                raise XAIError(
                    f"the view {slot.tab.name!r} has no ExplanationState on this model to follow; build it "
                    "with context.explorer(), context.new_state() or context.adopt(view)"
                )
        except Exception as error:  # one view that cannot be built must not take the others down
            slot.failed = True
            slot.show_error(f"the {slot.tab.title} view could not be built: {describe_error(error)}")
            return
        slot.widget, slot.state = widget, state
        slot.box.children = [slot.message, widget]
        state.observe(lambda change, slot=slot: self._from_view(slot, change), names=list(LINKED))
        if slot.tab.name == "camanim":
            self._link_player(widget)

    def _push(self, slot: _Slot) -> None:
        """Bring a view's state up to the master's (only what differs, in one batch of notifications); its
        work for the old state is cancelled first."""
        if slot.state is None:
            return
        changed = {
            name: getattr(self.state, name)
            for name in LINKED
            if not _same(getattr(slot.state, name), getattr(self.state, name))
        }
        if not changed:
            return
        if STALE.intersection(changed):
            slot.runner.cancel()
        try:
            with slot.state.hold_trait_notifications():
                for name, value in changed.items():
                    setattr(slot.state, name, value)
        except Exception as error:  # a view failing on a change shows why; the others still follow
            slot.show_error(f"the {slot.tab.title} view failed: {describe_error(error)}")
        else:
            slot.show_error("")

    def _from_view(self, slot: _Slot, change: dict) -> None:
        """A view changed a shared trait (a class bar, the randomization switch): the master follows."""
        name, value = change["name"], change["new"]
        if slot.runner.cache_only or _same(getattr(self.state, name), value):
            return
        previous, self._source = self._source, slot
        try:
            setattr(self.state, name, value)
        finally:
            self._source = previous

    def _on_master(self, change: dict) -> None:
        """The master changed: visible views follow now (see :meth:`_push`); hidden views' stale work is
        cancelled, and they follow too where every result they need is already cached (:meth:`_warm`), else
        they catch up when shown."""
        visible = self.visible
        hidden = [
            slot
            for name, slot in self.slots.items()
            if name not in visible and slot is not self._source and slot.widget is not None
        ]
        if change["name"] in STALE:
            for slot in hidden:
                slot.runner.cancel()
        for name in visible:
            slot = self.slots[name]
            if slot is not self._source:
                self._push(slot)
        for slot in hidden:
            self._warm(slot)
        if change["name"] == "layer":
            self._move_scrubber()

    def _warm(self, slot: _Slot) -> None:
        """Bring a hidden view up to the master's state if that costs no computation: its requests are
        answered from the cache only; if one is not cached, the view goes back to its previous state (whose
        results it shows) and catches up when shown. Showing the tab is then a relayout in the browser, with no
        round trip to the kernel."""
        if slot.state is None or slot.failed:
            return
        previous = {name: getattr(slot.state, name) for name in LINKED}
        runner = slot.runner
        runner.cache_only, runner.missed = True, False
        try:
            self._push(slot)
            if runner.missed:
                back = {n: v for n, v in previous.items() if not _same(getattr(slot.state, n), v)}
                with slot.state.hold_trait_notifications():
                    for name, value in back.items():
                        setattr(slot.state, name, value)
        except Exception as error:  # a view failing here shows why when it is shown; the others go on
            slot.show_error(f"the {slot.tab.title} view failed: {describe_error(error)}")
        finally:
            runner.cache_only = False

    def _on_tab(self, change: dict) -> None:
        name = None if change["new"] is None else self._tab_names[change["new"]]
        if name is None:
            return
        slot = self.slots[name]
        self._build(slot)
        self._push(slot)

    # ---------------------------------------------------------------- CAManim
    def _link_player(self, player: Any) -> None:
        """The scrubber's layer is the explorer's CAM layer, both ways (the player itself follows the picture,
        the target and the randomization of its state)."""

        def on_index(change: dict) -> None:
            film = player.film
            if self._moving_scrubber or film is None or not 0 <= change["new"] < len(film.names):
                return
            self.state.layer = film.names[change["new"]]

        player.view.observe(on_index, names="index")
        player.view.observe(lambda _: self._move_scrubber(), names="names")

    def _move_scrubber(self) -> None:
        """Show the master's layer (or the default CAM layer) in the film, without choosing it."""
        player = self.slots["camanim"].widget if "camanim" in self.slots else None
        if player is None or player.film is None:
            return
        try:
            layer = self.state.layer or self.adapter.default_cam_layer().name
        except XAIError:
            return
        if layer in player.film.names:
            self._moving_scrubber = True
            try:
                player.view.index = player.film.names.index(layer)
            finally:
                self._moving_scrubber = False

    # ----------------------------------------------------------------- pictures
    def _pictures(self) -> Tensor:
        """Every usable picture of the workbench, fitted to the model, as one N×C×H×W batch."""
        fitted = []
        for image in self._images.values():
            reader = ExplanationState(self.adapter)
            try:
                reader.set_image(image)
            except XAIError:
                continue
            fitted.append(reader.picture)
        if not fitted:
            raise InputError("the workbench has no usable picture yet")
        return torch.stack(fitted)

    def _say(self, text: str) -> None:
        self.message.value = error_html(text)

    def _on_image_choice(self, change: dict) -> None:
        name = change["new"]
        if name is None:
            return
        try:
            self.state.set_image(self._images[name], name)
        except XAIError as error:
            self._say(f"could not use picture {name!r}: {describe_error(error)}")
            return
        self._say("")

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]
        try:
            self.set_image(bytes(upload["content"]), f"upload: {upload['name']}")
        except InputError:
            return


# ------------------------------------------------------------------------------------------ workshop
def sample_images(adapter: ModelAdapter, name: str | None = None, n: int = 4) -> dict[str, Tensor]:
    """Pictures a zoo model was made for: seeded shapes for the shapes models, test digits for the MNIST ones."""
    name = name or adapter.name
    if name.startswith("mnist"):
        from ..data.digits import load_digits

        digits = load_digits("mnist", size=int(adapter.input_size[-1]), split="test")
        picks = [int(torch.nonzero(digits.labels == d)[0]) for d in range(min(n, 10))]
        return {f"digit {d} (test set)": digits.images[i] for d, i in enumerate(picks)}
    from ..data.shapes import make_shapes

    batch = make_shapes(n, size=int(adapter.input_size[-1]), seed=0)
    return {
        f"shapes sample {i + 1} (a {adapter.label(int(label))})": image
        for i, (image, label) in enumerate(zip(batch.images, batch.labels))
    }


def photographs() -> dict[str, Any]:
    """The offline photograph gallery (:func:`xai_widgets.images.gallery`) as pictures, by caption."""
    from ..images import GALLERY, gallery_image

    return {f"photo: {caption}": gallery_image(key) for key, caption in GALLERY.items()}


def folder_images(folder: str) -> dict[str, str]:
    """The picture files of a folder (PNG, JPEG, BMP, GIF, TIFF, WebP), by file name."""
    from xai_widgets_launch import AppError, picture_files

    try:
        return picture_files(folder)
    except AppError as error:
        raise InputError(str(error)) from None


class Workshop(w.VBox):
    """The workshop app's page: a model menu (the zoo) above a :class:`Workbench` on its pictures.

    The pictures are the model's own samples (shapes or digits), the offline photographs and the files of
    ``images`` (a folder); choosing another model builds a new workbench.

    Args:
        model: the zoo model shown first.
        images: a folder of pictures to add, or None.
        models: the zoo names offered (default: every zoo model).
        **options: passed to each :class:`Workbench` (tabs, road, size, …).
    """

    def __init__(
        self,
        model: str = "shapes-resnet",
        images: str | None = None,
        *,
        models: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        from .. import zoo

        self.models = list(zoo.names() if models is None else models)
        if model not in self.models:
            raise InputError(f"unknown zoo model {model!r}; choose one of {', '.join(self.models)}")
        self.folder = folder_images(images) if images is not None else {}
        self.options = options
        self.model_select = w.Dropdown(description="model", options=self.models, value=model)
        self.message = w.HTML()
        self.workbench: Workbench | None = None
        self.holder = w.VBox()
        super().__init__(
            [w.HTML("<h3>xai_widgets workbench</h3>"), self.model_select, self.message, self.holder]
        )
        self.add_class("xai-workshop")
        self.model_select.observe(lambda change: self.load(change["new"]), names="value")
        self.load(model)

    def load(self, name: str) -> Workbench | None:
        """Build the workbench of zoo model ``name`` (the previous one is closed); an error shows in the page."""
        from .. import zoo

        if self.workbench is not None:
            self.workbench.close()
            self.workbench = None
        try:
            adapter = zoo.load(name)
            pictures: dict[str, Any] = {**sample_images(adapter, name), **photographs(), **self.folder}
            self.workbench = Workbench(adapter, pictures, **self.options)
        except XAIError as error:
            self.message.value = error_html(f"could not open {name}: {describe_error(error)}")
            self.holder.children = []
            return None
        self.message.value = ""
        self.holder.children = [self.workbench]
        return self.workbench


def workshop(model: str = "shapes-resnet", images: str | None = None, **options: Any) -> Workshop:
    """The workshop page (what ``xai-widgets app`` serves through Voila)."""
    return Workshop(model, images, **options)


__all__ = [
    "LINKED",
    "TABS",
    "Tab",
    "ViewContext",
    "ViewRunner",
    "Workbench",
    "Workshop",
    "register_tab",
    "workshop",
]
