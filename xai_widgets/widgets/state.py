"""The linked state of an explorer: one object that every control writes and every view observes.

``ExplanationState`` holds the model (a ModelAdapter), the picture, the target, the chosen methods, the layer,
the randomization (substituted parameters for sanity checks) and the display normalisation as traitlets, so
views subscribe with ``state.observe(callback, names=[...])``. It also knows how to turn the current choices
into a cache key and an Explanation, so every widget computes (and caches) the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
import traitlets as t
from torch import Tensor

from ..errors import InputError
from ..explain import explain
from ..explanation import Explanation
from ..images import FITS, fit_picture, load_picture, read_picture, to_uint8
from ..model import ModelAdapter
from ..registry import get_method

Progress = Callable[[int, int], None]

__all__ = ["ExplanationState", "Progress", "accepts_progress", "fit_picture", "read_picture"]


def feature_vector(values: Any, adapter: ModelAdapter) -> Tensor:
    """One raw feature vector (before the adapter's preprocessing) for a model of N×D feature vectors."""
    try:
        vector = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1)
    except (TypeError, ValueError) as error:
        raise InputError(f"a feature vector must be numbers, got {type(values).__name__}") from error
    size = adapter.input_size[0]
    if vector.numel() != size:
        raise InputError(f"{adapter.name} takes {size} features, got {vector.numel()}")
    if not torch.isfinite(vector).all():
        raise InputError("the feature vector contains NaN or infinite values")
    return vector


def accepts_progress(method: str) -> bool:
    """Whether the registered method takes a ``progress`` callback (so it can report and be cancelled)."""
    return get_method(method).takes_progress


class ExplanationState(t.HasTraits):
    """What is being explained, shared by every view of one explorer.

    Traits (observe them with ``state.observe(fn, names=[...])``):
        picture: the current image, C×H×W float in [0, 1] at the model's input size (set with :meth:`set_image`);
            for a model of feature vectors, the raw D values.
        image_name: a label for the picture.
        target: class index, or None for the predicted class.
        methods: the chosen registry names.
        layer: catalogue name for layer methods, or None for the adapter's default CAM layer.
        randomization: a name for the substituted parameters ('' = the trained weights); part of every key.
        params: the substituted parameters (name → tensor) for ``adapter.using_params``, or None.
        options: per-method options, ``{"integrated_gradients": {"steps": 16}}``.
        normalization: display clipping for the views: ``percentile`` or ``symmetric``; ``percentile``: its value.
        fit: how a picture is brought to ``size``: ``"crop"`` (shorter side, centre crop; the default) or
            ``"stretch"``; changing it refits the current image.

    Pictures go through the engine's pipeline (:func:`xai_widgets.images.load_picture`), so a widget's model
    input is bitwise the ``load_image`` of the same source with the same size and fit.

    Args:
        adapter: the model.
        size: (H, W) every image is fitted to; default the adapter's ``input_size`` when it was given.
    """

    picture = t.Instance(Tensor, allow_none=True)
    image_name = t.Unicode("")
    target = t.Int(None, allow_none=True)
    methods = t.List(t.Unicode())
    layer = t.Unicode(None, allow_none=True)
    randomization = t.Unicode("")
    params = t.Any(None)
    options = t.Dict()
    normalization = t.Enum(("percentile", "symmetric"), default_value="percentile")
    percentile = t.Float(99.5, min=50.0, max=100.0)
    fit = t.Enum(FITS, default_value="crop")

    def __init__(self, adapter: ModelAdapter, *, size: tuple[int, int] | None = None, **traits: Any) -> None:
        self._source: Any = None  # what set_image was given, for refitting when ``fit`` changes
        super().__init__(**traits)
        self.adapter = adapter
        explicit = adapter.has_input_size
        self.size = tuple(size) if size is not None else (tuple(adapter.input_size[1:]) if explicit else None)
        self._hash: str | None = None

    # ------------------------------------------------------------------ image
    def set_image(self, image: Any, name: str = "") -> None:
        """Read, fit and set the picture (a path, gallery name, file bytes, PIL image, array or tensor); a bad
        image raises InputError and leaves the state unchanged."""
        if self.adapter.takes_vectors:
            picture = feature_vector(image, self.adapter)
        else:
            picture = load_picture(image, self.adapter, self.size, self.fit)
        with self.hold_trait_notifications():
            self._source = image
            self.image_name = name
            self.picture = picture

    @t.observe("fit")
    def _refit(self, change: dict) -> None:
        if self._source is not None and not self.adapter.takes_vectors:
            self.picture = load_picture(self._source, self.adapter, self.size, change["new"])

    @t.observe("picture")
    def _forget_hash(self, change: dict) -> None:
        self._hash = None

    @property
    def image_hash(self) -> str:
        """A digest of the picture's bytes: the image part of every cache key."""
        if self.picture is None:
            raise InputError("no image is set")
        if self._hash is None:
            self._hash = hashlib.sha1(self.picture.numpy().tobytes()).hexdigest()[:16]
        return self._hash

    def model_input(self) -> Tensor:
        """The picture as a 1×C×H×W model input on the adapter's device (through its preprocessing)."""
        if self.picture is None:
            raise InputError("no image is set")
        return self.adapter.preprocess(self.picture[None])

    def display_picture(self) -> np.ndarray:
        """The picture as H×W×3 uint8 for a HeatmapView."""
        if self.picture is None:
            raise InputError("no image is set")
        return to_uint8(self.picture)

    # ------------------------------------------------------------- randomization
    def randomize(self, params: Mapping[str, Tensor] | None, name: str) -> None:
        """Explain with substituted parameters (sanity checks); ``name`` identifies them in the cache.

        ``randomize(None, "")`` returns to the trained weights.
        """
        if params is not None and not name:
            raise InputError("substituted parameters need a name (it is part of every cache key)")
        with self.hold_trait_notifications():
            self.params = None if params is None else dict(params)
            self.randomization = name if params is not None else ""

    # ---------------------------------------------------------------- requests
    def layer_for(self, method: str) -> str | None:
        """The layer passed to ``method``: the chosen one for layer methods (None: the adapter's default CAM
        layer, resolved by ``explain`` in the worker, so building a key never runs the model), else None."""
        return self.layer if get_method(method).needs_layer else None

    def key(self, method: str, randomization: str | None = None) -> Hashable:
        """The cache key of ``method`` under the current choices (method, layer, target, options,
        randomization, image); ``randomization`` names other substituted weights than the current ones."""
        options = tuple(sorted((k, repr(v)) for k, v in self.options.get(method, {}).items()))
        return (
            "explanation",
            method,
            self.layer_for(method),
            self.target,
            options,
            self.randomization if randomization is None else randomization,
            self.image_hash,
        )

    def predictions_key(self, randomization: str | None = None) -> Hashable:
        """The cache key of the logits: the image and the randomization."""
        return ("logits", self.randomization if randomization is None else randomization, self.image_hash)

    def request(self, method: str) -> tuple[Hashable, Callable[[Progress | None], Explanation]]:
        """The cache key of ``method`` and a function computing it, both fixed to the choices made *now*.

        The function may run later in a worker thread; later changes of the state do not leak into it, so a
        result is always stored under the key of what it was computed from.
        """
        key = self.key(method)
        x, target, layer, params = self.model_input(), self.target, self.layer_for(method), self.params
        options = dict(self.options.get(method, {}))
        takes_progress = accepts_progress(method)

        def compute(progress: Progress | None = None) -> Explanation:
            extra = {"progress": progress} if progress is not None and takes_progress else {}
            with self.adapter.using_params(params):
                return explain(self.adapter, x, target, method, layer, **options, **extra).cpu()

        return key, compute

    def predictions_request(self) -> tuple[Hashable, Callable[[Progress | None], Tensor]]:
        """The cache key of the logits and a function computing them (softmax-free, on the CPU), fixed now."""
        key, x, params = self.predictions_key(), self.model_input(), self.params
        return key, lambda progress=None: self.adapter.logits(x, params)[0].cpu()

    def explain(self, method: str, progress: Progress | None = None) -> Explanation:
        """Run ``method`` on the picture for the current target, layer, options and parameters (on the CPU)."""
        return self.request(method)[1](progress)

    def logits(self) -> Tensor:
        """The model's logits for the picture (with the substituted parameters, if any), on the CPU."""
        return self.predictions_request()[1]()
