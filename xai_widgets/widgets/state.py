"""The linked state of an explorer: one object that every control writes and every view observes.

``ExplanationState`` holds the model (a ModelAdapter), the picture, the target, the chosen methods, the layer,
the randomization (substituted parameters for sanity checks) and the display normalisation as traitlets, so
views subscribe with ``state.observe(callback, names=[...])``. It also knows how to turn the current choices
into a cache key and an Explanation, so every widget computes (and caches) the same way.
"""

from __future__ import annotations

import hashlib
import inspect
import io
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import traitlets as t
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import InputError
from ..explain import explain
from ..explanation import Explanation
from ..model import ModelAdapter
from ..registry import get_method

Progress = Callable[[int, int], None]


def read_picture(image: Any) -> Tensor:
    """A C×H×W float32 picture in [0, 1] from a path, encoded bytes, a PIL image, an array or a tensor.

    Arrays are H×W or H×W×C (uint8, or float in [0, 1]); tensors are C×H×W or 1×C×H×W. An alpha channel is
    dropped. Values outside [0, 1] raise InputError: the explorer wants the picture, not normalised model input.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"no image file at {str(path)!r}")
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"{str(path)!r} is not an image PIL can read ({error})") from error
    elif isinstance(image, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(image))) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"the file is not an image PIL can read (PNG, JPEG, …): {error}") from error
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        array = image[:, :, None] if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise InputError(
                f"an image array must be H×W or H×W×C with C in 1, 3, 4; got shape {image.shape}"
            )
        tensor = torch.from_numpy(np.array(array)).permute(2, 0, 1)
    elif isinstance(image, Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise InputError(
                f"an image tensor must be C×H×W with C in 1, 3, 4; got shape {tuple(image.shape)}"
            )
    else:
        raise InputError(
            f"an image must be a path, image file bytes, a PIL image, an array or a tensor; got {type(image).__name__}"
        )
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise InputError(f"the image is empty: shape {tuple(tensor.shape)}")
    tensor = tensor[:3]
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        raise InputError(f"an image must be uint8 or float in [0, 1], got {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise InputError("the image contains NaN or infinite values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise InputError(
            f"float images must be pictures in [0, 1], got values in [{low:.3g}, {high:.3g}] (normalised model "
            "input? pass the picture and give the model's preprocessing instead)"
        )
    return tensor.clamp(0, 1)


def fit_picture(picture: Tensor, channels: int | None, size: tuple[int, int] | None) -> Tensor:
    """Match a C×H×W picture to the model: channel count (grey ↔ RGB) and, when given, H×W.

    Resizing keeps the aspect ratio (shorter side to fit, antialiased bilinear) and crops the centre.
    """
    if channels is not None and picture.shape[0] != channels:
        if channels == 1:
            picture = picture.mean(dim=0, keepdim=True)
        elif picture.shape[0] == 1:
            picture = picture.expand(channels, -1, -1)
        else:
            raise InputError(f"the model expects {channels} input channels; the image has {picture.shape[0]}")
    if size is not None and tuple(picture.shape[1:]) != tuple(size):
        height, width = size
        scale = max(height / picture.shape[1], width / picture.shape[2])
        resized = (max(height, round(picture.shape[1] * scale)), max(width, round(picture.shape[2] * scale)))
        picture = F.interpolate(
            picture[None], size=resized, mode="bilinear", antialias=True, align_corners=False
        )[0]
        top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
        picture = picture[:, top : top + height, left : left + width].clamp(0, 1)
    return picture.contiguous()


def accepts_progress(method: str) -> bool:
    """Whether the registered method takes a ``progress`` callback (so it can report and be cancelled)."""
    parameters = inspect.signature(get_method(method).fn).parameters.values()
    return any(p.name == "progress" or p.kind is p.VAR_KEYWORD for p in parameters)


class ExplanationState(t.HasTraits):
    """What is being explained, shared by every view of one explorer.

    Traits (observe them with ``state.observe(fn, names=[...])``):
        picture: the current image, C×H×W float in [0, 1] at the model's input size (set with :meth:`set_image`).
        image_name: a label for the picture.
        target: class index, or None for the predicted class.
        methods: the chosen registry names.
        layer: catalogue name for layer methods, or None for the adapter's default CAM layer.
        randomization: a name for the substituted parameters ('' = the trained weights); part of every key.
        params: the substituted parameters (name → tensor) for ``adapter.using_params``, or None.
        options: per-method options, ``{"integrated_gradients": {"steps": 16}}``.
        normalization: display clipping for the views: ``percentile`` or ``symmetric``; ``percentile``: its value.

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

    def __init__(self, adapter: ModelAdapter, *, size: tuple[int, int] | None = None, **traits: Any) -> None:
        super().__init__(**traits)
        self.adapter = adapter
        explicit = adapter.has_input_size
        self.size = tuple(size) if size is not None else (tuple(adapter.input_size[1:]) if explicit else None)
        self._hash: str | None = None

    # ------------------------------------------------------------------ image
    def set_image(self, image: Any, name: str = "") -> None:
        """Read, fit and set the picture; a bad image raises InputError and leaves the state unchanged."""
        picture = fit_picture(read_picture(image), self.adapter.in_channels, self.size)
        with self.hold_trait_notifications():
            self.image_name = name
            self.picture = picture

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
        picture = self.picture if self.picture.shape[0] == 3 else self.picture[:1].expand(3, -1, -1)
        return np.round(picture.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)

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
