"""ModelAdapter: the one place that touches the user's ``nn.Module``.

It knows the model's device, preprocessing, labels and an ordered layer catalogue, and offers the few
operations every method is built from: multi-layer capture (one forward, one ``autograd.grad``),
temporary backward rules, forward with substituted parameters, and output replacement. Every hook and
temporary flag it installs is removed in ``finally``, so the user's model is exactly as before after any
call, also one that raised.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import itertools
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError, LayerError, TargetError, UnsupportedModelError, XAIError
from .layouts import NO_MAP, Layout, LayoutTracker

Target = int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | None

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
_ACT = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Hardswish,
    nn.PReLU,
)
_POOL = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.MaxPool1d,
    nn.AvgPool1d,
)


def layer_kind(module: nn.Module) -> str:
    """Classify a module for the layer catalogue: conv, batchnorm, activation, pool, linear, dropout, block, other."""
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, _NORM):
        return "norm"
    if isinstance(module, _ACT):
        return "activation"
    if isinstance(module, _POOL):
        return "pool"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "dropout"
    if isinstance(module, nn.Flatten):
        return "flatten"
    if len(module._modules) > 0:
        return "block"
    return "other"


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on for the block, also inside the caller's ``torch.no_grad()`` or ``torch.inference_mode()``.

    Every public entry point that runs the model uses it (``with gradients_enabled():`` or as the decorator
    ``@gradients_enabled()``): explanations need gradients whatever mode the caller is in. Inputs made under
    inference mode are copied into normal tensors by :meth:`ModelAdapter.prepare`; a model whose parameters are
    inference tensors raises UnsupportedModelError there.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@dataclass(frozen=True)
class LayerInfo:
    """One entry of the layer catalogue, in forward order.

    ``out_shape`` is the output shape of one sample (without the batch dimension) at the adapter's
    ``input_size``; ``calls`` counts how often the module ran in one forward (torchvision reuses one ReLU).
    A module that runs several times has one entry per call: its bare name is its last call (``call ==
    calls``), the earlier calls are named ``name#k`` (k = 1, 2, … in forward order).
    """

    name: str
    kind: str
    module: nn.Module = field(repr=False, compare=False)
    out_shape: tuple[int, ...] | None
    index: int
    calls: int = 1
    call: int = 1
    layout: Layout | None = field(default=None, compare=False)

    @property
    def map_shape(self) -> tuple[int, ...] | None:
        """C×h×w of the layer's map: its ``layout`` read (tokens, channels last) or, without a layout, the
        output itself when it is C×H×W; None when the output is no map."""
        if self.layout is not None:
            return self.layout.map_shape
        if self.out_shape is not None and len(self.out_shape) == 3:
            return self.out_shape
        return None

    @property
    def spatial(self) -> bool:
        """True when the output reads as channels and a 2-D map (C×h×w, see ``layout``): a layer a CAM can use."""
        return self.map_shape is not None


@dataclass
class Capture:
    """What one capturing forward/backward produced.

    ``acts[name]`` is the output of that layer (last call when a module runs several times);
    ``grads[name]`` is d score / d activation (None when not asked or not reached); ``input_grad`` is
    d score / d x when asked.
    """

    logits: Tensor
    score: Tensor
    target: Tensor | None
    acts: dict[str, Tensor]
    grads: dict[str, Tensor | None]
    input_grad: Tensor | None = None


class _Shared:
    """An adapter attribute kept in the adapter's ``_state`` dict, which the copies made by :func:`as_adapter`
    share: what one call learns about a module (its layer catalogue, class count) serves the next."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, adapter: Any, owner: type | None = None) -> Any:
        if adapter is None:
            return self
        try:
            return adapter._state[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, adapter: Any, value: Any) -> None:
        adapter._state[self.name] = value


class ModelAdapter:
    """Wraps an image classifier with what every explanation needs.

    Args:
        model: any ``nn.Module`` mapping an N×C×H×W float batch to N×K logits (see ``output`` for others).
        mean, std: per-channel normalisation applied by :meth:`preprocess` (None: identity).
        labels: class names (length K), optional.
        input_size: (C, H, W) used to build the layer catalogue; default: the first conv's channels and 224×224.
        preprocess: optional callable mapping a float [0,1] N×C×H×W batch to model input; overrides mean/std.
        name: a display name.
        feature_names: names of the D features of a model that takes N×D feature vectors (tabular data).
        output: how to read N×K logits from a model whose output is something else: a key (a dict such as
            ``{"logits": ...}``, or an attribute such as Hugging Face's ``ModelOutput.logits``), an index (a
            tuple or list) or a callable on the output (e.g. ``lambda y: y.mean(dim=(2, 3))`` for an N×K×H×W
            map). Without it an output that is not N×K raises UnsupportedModelError saying which to use.
        reshape_transform: optional callable mapping a layer's output (tokens, channels last, …) to N×C×h×w,
            for a model whose layouts are not recognised (see ``xai_widgets.layouts``); it reads every output
            that is not channels-first and takes precedence over the recognised layouts.

    Example:
        >>> import torch, torchvision
        >>> adapter = ModelAdapter(torchvision.models.resnet18().eval(), input_size=(3, 64, 64))
        >>> [layer.name for layer in adapter.layers() if layer.spatial][-1]
        'layer4'
    """

    input_size = _Shared()
    _catalogue = _Shared()
    _num_classes = _Shared()

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        labels: Sequence[str] | None = None,
        input_size: tuple[int, int, int] | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        name: str | None = None,
        info: Mapping[str, Any] | None = None,
        output: str | int | Callable[[Any], Tensor] | None = None,
        feature_names: Sequence[str] | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if isinstance(model, ModelAdapter):
            raise TypeError("model is already a ModelAdapter")
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(output, bool) or not (
            output is None or isinstance(output, (str, int)) or callable(output)
        ):
            raise InputError(
                f"output must be a key (str), an index (int) or a callable, got {type(output).__name__}"
            )
        self._model: nn.Module | None = model
        self._model_ref: weakref.ref | None = None
        self._state: dict[str, Any] = {}  # input_size, catalogue, class count: shared by as_adapter's copies
        self.output = output
        if reshape_transform is not None and not callable(reshape_transform):
            raise InputError(f"reshape_transform must be callable, got {type(reshape_transform).__name__}")
        self.reshape_transform = reshape_transform
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.labels = None if labels is None else [str(label) for label in labels]
        self._preprocess = preprocess
        self.name = name or type(model).__name__
        self.info = dict(info or {})
        self._explicit_size = input_size is not None
        self.feature_names = None if feature_names is None else [str(f) for f in feature_names]
        self.input_size = (
            tuple(input_size) if input_size is not None else _default_size(model, self.feature_names)
        )
        self._catalogue: list[LayerInfo] | None = None
        self._params: Mapping[str, Tensor] | None = None
        self._num_classes: int | None = len(self.labels) if self.labels else None

    # ------------------------------------------------------------------ basics
    @property
    def model(self) -> nn.Module:
        """The wrapped module (held weakly only by the template :func:`as_adapter` caches, so the cache never
        keeps it alive; every adapter handed out holds it)."""
        model = self._model if self._model is not None else self._model_ref()
        if model is None:
            raise XAIError("the model of this adapter no longer exists (it was garbage-collected)")
        return model

    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter (or buffer); CPU for a model without either."""
        for tensor in self.model.parameters():
            return tensor.device
        for tensor in self.model.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    @property
    def has_input_size(self) -> bool:
        """True when the adapter was given an explicit ``input_size`` (images are then resized to it)."""
        return self._explicit_size

    @property
    def in_channels(self) -> int | None:
        """Channels the first convolution expects (None when the model has no convolution)."""
        for module in self.model.modules():
            if isinstance(module, _CONV):
                return module.in_channels
        return None

    @property
    def num_classes(self) -> int:
        """Number of logits, from the labels or one dummy forward at ``input_size``."""
        if self._num_classes is None:
            with torch.no_grad(), self.evaluating():
                logits = self.logits_of(self._dummy_forward())
            self._num_classes = int(logits.shape[-1])
        return self._num_classes

    def _dummy_forward(self) -> Any:
        """The model on zeros of ``input_size``; a model that cannot take that size raises InputError."""
        x = torch.zeros((1, *self.input_size), device=self.device, dtype=self.dtype)
        try:
            return self.model(x)
        except RuntimeError as error:
            hint = "" if self._explicit_size else " (a default size: give input_size=(C, H, W) of its images)"
            raise InputError(
                f"{self.name} does not run on a 1×{'×'.join(map(str, self.input_size))} input{hint}: {error}"
            ) from error

    def label(self, index: int) -> str:
        """The class name of ``index`` (its number when the adapter has no labels)."""
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return str(index)

    def __repr__(self) -> str:
        return f"ModelAdapter({self.name}, device={self.device}, input_size={self.input_size})"

    # ---------------------------------------------------------- preprocessing
    def preprocess(self, images: Tensor) -> Tensor:
        """Map pictures in [0, 1] (float) or [0, 255] (uint8), N×C×H×W or C×H×W, to model input on the device."""
        if not isinstance(images, Tensor):
            raise InputError(f"preprocess expects a torch.Tensor, got {type(images).__name__}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        if images.ndim == 3:
            images = images.unsqueeze(0)
        images = images.to(self.device, self.dtype)
        if self._preprocess is not None:
            return self._preprocess(images)
        if self.mean is not None:
            shape = (1, -1) + (1,) * (images.ndim - 2)  # N×C×H×W pictures or N×D feature vectors
            mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(shape)
            std = torch.tensor(self.std or (1.0,) * len(self.mean), device=images.device, dtype=images.dtype)
            images = (images - mean) / std.view(shape)
        return images

    def unpreprocess(self, x: Tensor) -> Tensor:
        """Invert the mean/std normalisation for display: model input back to pictures in [0, 1]."""
        if self.mean is not None:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
            std = torch.tensor(self.std or (1.0,) * len(self.mean), device=x.device, dtype=x.dtype)
            x = x * std.view(shape) + mean
        return x.clamp(0, 1)

    def prepare(self, x: Any) -> Tensor:
        """Validate a model-input batch and move it to the device: N×C×H×W (C×H×W is promoted), float, finite."""
        if not isinstance(x, Tensor):
            raise InputError(
                f"the image must be a torch.Tensor (N×C×H×W or C×H×W float), got {type(x).__name__}; "
                "use xai_widgets.load_image for paths, PIL images and arrays"
            )
        if x.is_inference():  # made under torch.inference_mode(): a normal copy can carry gradients
            with torch.inference_mode(False):
                x = x.clone()
        self._check_parameters()
        if x.ndim == 2 or (x.ndim == 1 and self.takes_vectors):
            return self._prepare_vectors(x)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4:
            raise InputError(f"the image must have shape N×C×H×W or C×H×W, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputError(
                f"the image must be a float tensor (normalised model input), got dtype {x.dtype}; "
                "use adapter.preprocess or xai_widgets.load_image for uint8 pictures"
            )
        if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise InputError(f"the image batch is empty: shape {tuple(x.shape)}")
        channels = self.in_channels
        if channels is not None and x.shape[1] != channels:
            raise InputError(f"the model expects {channels} input channels, the image has {x.shape[1]}")
        if not torch.isfinite(x).all():
            raise InputError("the image contains NaN or infinite values")
        if not self._explicit_size and tuple(x.shape[1:]) != self.input_size:
            # without an explicit input_size the catalogue describes the images actually explained
            self.input_size, self._catalogue = tuple(x.shape[1:]), None
        return x.detach().to(self.device, self.dtype)

    @property
    def takes_vectors(self) -> bool:
        """True for a model of N×D feature vectors (no convolution, a 1-D ``input_size``)."""
        return self.in_channels is None and len(self.input_size) == 1

    def _prepare_vectors(self, x: Tensor) -> Tensor:
        """Validate an N×D batch of feature vectors (D is promoted) for a model without convolutions."""
        if self.in_channels is not None:
            raise InputError(
                f"{self.name} takes images (N×C×H×W, {self.in_channels} channels); got a tensor of shape "
                f"{tuple(x.shape)}"
            )
        x = x.unsqueeze(0) if x.ndim == 1 else x
        if not x.is_floating_point():
            raise InputError(f"the feature vectors must be a float tensor, got dtype {x.dtype}")
        if x.numel() == 0:
            raise InputError(f"the feature batch is empty: shape {tuple(x.shape)}")
        size = len(self.feature_names) if self.feature_names else None
        if size is None and self._explicit_size and len(self.input_size) == 1:
            size = self.input_size[0]
        if size is not None and x.shape[1] != size:
            raise InputError(f"{self.name} expects N×{size} feature vectors, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise InputError("the feature vectors contain NaN or infinite values")
        if tuple(x.shape[1:]) != self.input_size:
            self.input_size, self._catalogue = tuple(x.shape[1:]), None
        return x.detach().to(self.device, self.dtype)

    def _check_parameters(self) -> None:
        """Parameters and buffers created under ``torch.inference_mode()`` cannot take part in autograd."""
        model = self.model
        if not any(t.is_inference() for t in itertools.chain(model.parameters(), model.buffers())):
            return
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            if tensor.is_inference():
                raise UnsupportedModelError(
                    f"{self.name}'s {name} is an inference tensor (the model was built or loaded inside "
                    "torch.inference_mode()), so no gradient can pass through it; build or load the model "
                    "outside inference_mode (torch.no_grad() is fine), or use a copy made outside it: "
                    "copy.deepcopy(model)"
                )

    # ---------------------------------------------------------------- layers
    def layers(self) -> list[LayerInfo]:
        """The layer catalogue: every submodule that runs in a forward at ``input_size``, in call order."""
        if self._catalogue is None:
            self._catalogue = self._build_catalogue()
        return self._catalogue

    def _build_catalogue(self) -> list[LayerInfo]:
        named = [(n, m) for n, m in self.model.named_modules() if n]
        events: list[tuple[str, int, tuple[int, ...] | None]] = []  # (module name, call, shape) as they run
        calls: dict[str, int] = {}
        tracker = LayoutTracker(self.model, self.input_size, self.reshape_transform)  # tokens, channels last

        def make_hook(name: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
                calls[name] = calls.get(name, 0) + 1
                shape = tuple(output.shape[1:]) if isinstance(output, Tensor) else None
                events.append((name, calls[name], shape))
                tracker.record(module, inputs, output)

            return hook

        handles = [m.register_forward_hook(make_hook(n)) for n, m in named]
        try:
            with torch.no_grad(), self.evaluating(), self.no_inplace():
                self._dummy_forward()
        finally:
            for handle in handles:
                handle.remove()
        modules = dict(named)
        # forward hooks fire in post-order: a block's output is listed right after its last child; a reused
        # module gets one entry per call, the last one under its bare name
        return [
            LayerInfo(
                n if call == calls[n] else f"{n}#{call}",
                layer_kind(modules[n]),
                modules[n],
                shape,
                i,
                calls[n],
                call,
                tracker.layouts[i] or NO_MAP,
            )
            for i, (n, call, shape) in enumerate(events)
        ]

    def spatial_layers(self, kinds: Iterable[str] | None = None) -> list[LayerInfo]:
        """Layers with a C×H×W output (optionally only of the given kinds), in forward order."""
        wanted = None if kinds is None else set(kinds)
        return [
            layer for layer in self.layers() if layer.spatial and (wanted is None or layer.kind in wanted)
        ]

    def default_cam_layer(self) -> LayerInfo:
        """The usual CAM layer, chosen from the architecture alone (no probe, so menus and caches stay stable).

        A transformer with token outputs: the first norm of its last block (torchvision
        ``encoder.layers[-1].ln_1``, timm ``blocks[-1].norm1``; after the last block the patch tokens get no
        gradient when the head reads only the class token). Otherwise the last layer whose output reads as a
        map larger than 1×1 (see :mod:`xai_widgets.layouts`).
        """
        from .layouts import transformer_cam_layer

        chosen = transformer_cam_layer(self.layers())
        if chosen is not None:
            return chosen
        candidates = [
            layer
            for layer in self.spatial_layers(("conv", "activation", "norm", "block", "pool"))
            if layer.map_shape[1] * layer.map_shape[2] > 1
        ]
        if not candidates:
            raise LayerError(f"{self.name} has no layer with a spatial (C×H×W) output; CAM methods need one")
        return candidates[-1]

    def resolve_layer(self, layer: str | nn.Module | LayerInfo) -> LayerInfo:
        """Find a catalogue entry by name, module or LayerInfo; an unknown name lists near matches."""
        catalogue = self.layers()
        if isinstance(layer, LayerInfo):
            layer = layer.name
        if isinstance(layer, nn.Module):
            for entry in catalogue:
                if entry.module is layer and entry.call == entry.calls:
                    return entry
            raise LayerError(f"the module {type(layer).__name__} is not part of {self.name} (or never runs)")
        if not isinstance(layer, str):
            raise LayerError(f"a layer is given by name or module, got {type(layer).__name__}")
        for entry in catalogue:
            if entry.name == layer or (entry.calls > 1 and layer == f"{entry.name}#{entry.calls}"):
                return entry
        names = [entry.name for entry in catalogue]
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LayerError(
            f"unknown layer {layer!r} in {self.name}{hint} (adapter.layers() lists all {len(names)})"
        )

    def module(self, name: str) -> nn.Module:
        return self.resolve_layer(name).module

    # ------------------------------------------------------------ model state
    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Run in eval behaviour (dropout off, BatchNorm on running stats); restore each module's flag after."""
        flags = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            yield
        finally:
            for module, training in flags:
                module.training = training

    @contextlib.contextmanager
    def no_inplace(self) -> Iterator[None]:
        """Temporarily turn off ``inplace`` on modules that have it (ReLU(inplace=True)), restored after."""
        flags = [
            (m, m.inplace) for m in self.model.modules() if isinstance(getattr(m, "inplace", None), bool)
        ]
        try:
            for module, _ in flags:
                module.inplace = False
            yield
        finally:
            for module, inplace in flags:
                module.inplace = inplace

    @contextlib.contextmanager
    def hooks(
        self,
        forward: Mapping[nn.Module | str | LayerInfo, Callable] | None = None,
        pre: Mapping[nn.Module | str | LayerInfo, Callable] | None = None,
    ) -> Iterator[None]:
        """Install forward hooks (``forward[key]``, may return a replacement output) and forward pre-hooks.

        A key that is a module hooks every call of it; a catalogue name (or LayerInfo) hooks exactly the call
        that entry describes (``'layer1.0.relu#1'``: the first call of a reused module, the bare name: its
        last). Both are removed in ``finally``; ``inplace`` flags are off meanwhile, so a replaced or captured
        output is never overwritten by a later in-place activation.
        """
        handles = []
        counts: dict[nn.Module, int] = {}

        def resolve(key: nn.Module | str | LayerInfo, hook: Callable) -> tuple[nn.Module, Callable]:
            if isinstance(key, nn.Module):
                return key, hook
            entry = self.resolve_layer(key)
            if entry.calls == 1:
                return entry.module, hook
            counts.setdefault(entry.module, 0)

            def on_call(module: nn.Module, *args: Any) -> Any:
                return hook(module, *args) if counts[module] == entry.call else None

            return entry.module, on_call

        try:
            with self.no_inplace():
                pres = [resolve(key, hook) for key, hook in (pre or {}).items()]
                forwards = [resolve(key, hook) for key, hook in (forward or {}).items()]
                if counts:  # number the calls of reused modules, from 0 at the start of each forward

                    def restart(model: nn.Module, inputs: tuple) -> None:
                        counts.update(dict.fromkeys(counts, 0))

                    handles.append(self.model.register_forward_pre_hook(restart))
                    for module in counts:
                        handles.append(module.register_forward_pre_hook(_counter(counts), prepend=True))
                for module, hook in pres:
                    handles.append(module.register_forward_pre_hook(hook))
                for module, hook in forwards:
                    handles.append(module.register_forward_hook(hook))
                yield
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def rules(self, assignment: Mapping[nn.Module, Any]) -> Iterator[None]:
        """Temporarily install backward rules: ``assignment[module]`` is a rule object.

        A rule may define ``forward_pre_hook(module, inputs)`` and ``forward_hook(module, inputs, output)``
        (which returns the output with a modified backward, see ``xai_widgets.methods.rules``), and
        ``context(module)``, a context manager entered while the rule is active.
        """
        forward = {
            m: _unobserved(r.forward_hook) for m, r in assignment.items() if hasattr(r, "forward_hook")
        }
        pre = {
            m: _unobserved(r.forward_pre_hook)
            for m, r in assignment.items()
            if hasattr(r, "forward_pre_hook")
        }
        with contextlib.ExitStack() as stack:
            for module, rule in assignment.items():
                if hasattr(rule, "context"):
                    stack.enter_context(rule.context(module))
            stack.enter_context(self.hooks(forward=forward, pre=pre))
            yield

    @contextlib.contextmanager
    def backward_slope(self, slope: float) -> Iterator[None]:
        """Within the block every ReLU and LeakyReLU (module or functional, in place or not) keeps its forward
        and uses negative slope ``slope`` in its backward (activation maximization, Linse et al. 2024; see
        ``xai_widgets.methods.backward_slope``)."""
        from .methods.backward_slope import functional_slope, slope_rules

        with self.rules(slope_rules(self.model, slope)), functional_slope(self.model, slope):
            yield

    @contextlib.contextmanager
    def replace_output(self, layer: str | nn.Module, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
        """Within the block, ``layer``'s output is replaced by ``fn(output)`` (the hook *returns* it); for a reused
        module only at the call the catalogue entry names."""
        entry = self.resolve_layer(layer)

        def hook(mod: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            return fn(output)

        with self.hooks(forward={entry: hook}):
            yield

    def mask_units(
        self, layer: str | nn.Module, mask: Tensor, values: Tensor
    ) -> contextlib.AbstractContextManager:
        """Within the block, units of ``layer`` where ``mask`` is True take ``values`` (broadcast per sample)."""
        return self.replace_output(layer, lambda out: torch.where(mask.to(out.device), values.to(out), out))

    # --------------------------------------------------------------- running
    @contextlib.contextmanager
    def using_params(self, params: Mapping[str, Tensor] | None) -> Iterator[None]:
        """Within the block every forward (so every method) runs with ``params`` substituted (sanity checks).

        The substitution goes through ``torch.func.functional_call``; the module's own tensors are untouched,
        and module hooks (rules, capture) still fire.
        """
        previous = self._params
        try:
            self._params = params
            yield
        finally:
            self._params = previous

    @property
    def params_override(self) -> Mapping[str, Tensor] | None:
        """The parameters substituted by :meth:`using_params` (None outside it)."""
        return self._params

    def forward(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """N×K logits of ``x`` (read from the model's output by ``output``); with ``params`` (or inside
        :meth:`using_params`), computed with those parameters and buffers via ``functional_call``.

        Every method runs the model through here, so the output selector applies everywhere.
        """
        params = self._params if params is None else params
        if params is None:
            return self.logits_of(self.model(x))
        return self.logits_of(torch.func.functional_call(self.model, dict(params), (x,), strict=False))

    def logits_of(self, output: Any) -> Tensor:
        """The N×K logits in a model output, selected by the adapter's ``output`` (key, index or callable)."""
        selector = self.output
        if selector is None:
            logits = output
        elif callable(selector):
            logits = selector(output)
        elif isinstance(selector, str):
            if isinstance(output, Mapping) and selector in output:
                logits = output[selector]
            elif not isinstance(output, Mapping) and hasattr(output, selector):
                logits = getattr(output, selector)
            else:
                raise UnsupportedModelError(
                    f"output={selector!r}: {self.name} returns {_describe(output)}, which has no key or attribute "
                    f"{selector!r}"
                )
        else:
            try:
                logits = output[selector]
            except (TypeError, IndexError, KeyError) as error:
                raise UnsupportedModelError(
                    f"output={selector!r}: {self.name} returns {_describe(output)}, which has no item {selector}"
                ) from error
        if isinstance(logits, Tensor) and logits.ndim == 2:
            return logits
        raise UnsupportedModelError(_output_advice(self.name, output, logits, selector))

    def logits(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits without gradients, in eval behaviour."""
        with torch.no_grad(), self.evaluating():
            return self.forward(self.prepare(x), params)

    def resolve_target(self, target: Target, x: Tensor | None = None, logits: Tensor | None = None) -> Any:
        """Turn a target into a LongTensor of N class indices (or keep a callable on the logits).

        ``None`` means the predicted class (needs ``x`` or ``logits``); an int applies to every sample; a list
        gives one per sample. Raises TargetError for indices out of range or lengths that do not match.
        """
        if callable(target) and not isinstance(target, Tensor):
            return target
        n = None if x is None and logits is None else (logits if logits is not None else x).shape[0]
        if target is None:
            if logits is None:
                logits = self.logits(x)
            return logits.argmax(dim=1).to(self.device)
        if logits is not None:
            self._num_classes = int(logits.shape[-1])
        elif self._num_classes is None and x is not None:
            self._num_classes = int(self.logits(x[:1]).shape[-1])
        num = self.num_classes
        if isinstance(target, bool):
            raise TargetError(f"target must be a class index, not a bool ({target})")
        if isinstance(target, int):
            indices = torch.tensor([target])
        else:
            try:
                indices = torch.as_tensor(target)
            except (TypeError, ValueError, RuntimeError) as error:
                raise TargetError(
                    f"target must be an int, a list of ints, a tensor or a callable, got {type(target).__name__}"
                ) from error
            if indices.is_floating_point() or indices.dtype == torch.bool or indices.ndim > 1:
                raise TargetError(
                    f"target must hold integer class indices, got {indices.dtype} of shape {tuple(indices.shape)}"
                )
            indices = indices.reshape(-1)
        if indices.is_inference():  # a target made under torch.inference_mode() cannot be saved for backward
            with torch.inference_mode(False):
                indices = indices.clone()
        bad = indices[(indices < 0) | (indices >= num)]
        if bad.numel():
            raise TargetError(f"target {int(bad[0])} is out of range: {self.name} has classes 0..{num - 1}")
        if n is not None:
            if indices.numel() == 1:
                indices = indices.expand(n)
            elif indices.numel() != n:
                raise TargetError(f"got {indices.numel()} targets for a batch of {n} images (give 1 or {n})")
        return indices.to(self.device, torch.long)

    @staticmethod
    def score(logits: Tensor, target: Any) -> Tensor:
        """The per-sample quantity explained: the target logit, or ``target(logits)`` for a callable target."""
        if callable(target) and not isinstance(target, Tensor):
            value = target(logits)
            if not isinstance(value, Tensor) or value.shape != logits.shape[:1]:
                raise TargetError("a callable target must return one score per sample (a tensor of shape N)")
            return value
        return logits.gather(1, target.view(-1, 1)).squeeze(1)

    def capture(
        self,
        x: Tensor,
        layers: Sequence[str | nn.Module],
        target: Target = None,
        *,
        grads: bool = True,
        input_grad: bool = False,
        params: Mapping[str, Tensor] | None = None,
        create_graph: bool = False,
        maps: bool = True,
    ) -> Capture:
        """One forward keeping the outputs of ``layers``, then one ``autograd.grad`` for all their gradients.

        The model runs in eval behaviour; captured outputs are shielded from later in-place operations
        (``out += identity``, in-place ReLU). Parameter ``.grad`` fields are never touched. A reused module's
        bare name captures its last call, ``name#k`` its k-th (see :meth:`layers`). With ``maps`` (default),
        token and channels-last outputs and their gradients come as N×C×h×w maps (the entry's ``layout``);
        ``maps=False`` keeps every output as the model produced it.
        """
        entries = [self.resolve_layer(layer) for layer in layers]
        x = self.prepare(x)
        acts: dict[str, Tensor] = {}

        def make_hook(name: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
                acts[name] = output
                return output.clone()

            return hook

        # a bare name keeps the last call of its module (its hook overwrites), ``name#k`` exactly call k
        keys = {e.module if e.call == e.calls else e.name: make_hook(e.name) for e in entries}
        with contextlib.ExitStack() as stack:
            stack.enter_context(gradients_enabled())
            stack.enter_context(self.evaluating())
            stack.enter_context(self.hooks(forward=keys))
            if not grads and not input_grad:
                stack.enter_context(torch.no_grad())
            if input_grad or grads:  # also reaches activations of a model whose parameters are all frozen
                x = x.clone().requires_grad_(True)
            with torch.enable_grad() if (grads or input_grad) else contextlib.nullcontext():
                logits = self.forward(x, params)
                if not callable(target) or isinstance(target, Tensor):
                    target = self.resolve_target(target, logits=logits)
                score = self.score(logits, target)
                names = [e.name for e in entries if e.name in acts]
                sources = ([x] if input_grad else []) + [acts[n] for n in names if grads]
                gradients: list[Tensor | None] = []
                if sources:
                    gradients = list(
                        torch.autograd.grad(
                            score.sum(), sources, allow_unused=True, create_graph=create_graph
                        )
                    )
        input_gradient = gradients.pop(0) if input_grad else None
        grad_map = dict(zip(names, gradients)) if grads else {}
        # token and channels-last outputs (and their gradients) as N×C×h×w maps, see xai_widgets.layouts
        for entry in entries if maps else ():
            if entry.layout is not None and entry.layout.kind not in ("channels_first", "none"):
                if entry.name in acts:
                    acts[entry.name] = entry.layout.to_map(acts[entry.name])
                if grad_map.get(entry.name) is not None:
                    grad_map[entry.name] = entry.layout.to_map(grad_map[entry.name])
        if not create_graph:
            acts = {k: v.detach() for k, v in acts.items()}
            logits, score = logits.detach(), score.detach()
        return Capture(
            logits, score, target if isinstance(target, Tensor) else None, acts, grad_map, input_gradient
        )


def _default_size(model: nn.Module, feature_names: Sequence[str] | None) -> tuple[int, ...]:
    """(D,) for a model of feature vectors (feature names given, or no convolution and a Linear as the first
    layer to run, no Flatten before it); else (C, 224, 224), C from the first convolution (3 without one)."""
    if feature_names is not None:
        return (len(feature_names),)
    modules = list(model.modules())
    for module in modules:
        if isinstance(module, _CONV):
            return (module.in_channels, 224, 224)
    first = next((m for m in modules if not m._modules), None)
    return (first.in_features,) if isinstance(first, nn.Linear) else (3, 224, 224)


def _counter(counts: dict[nn.Module, int]) -> Callable:
    """A forward pre-hook counting the calls of a module in ``counts``."""

    def count(module: nn.Module, inputs: tuple) -> None:
        counts[module] += 1

    return count


def _unobserved(hook: Callable) -> Callable:
    """``hook`` run with torch-function handling off: a rule's hook is rule machinery, which the interception
    modes (:mod:`.methods.intercept`) leave alone anyway; without this each of its tensor calls would still
    enter the mode's Python handler only to be passed through."""

    def run(*args: Any) -> Any:
        with torch._C.DisableTorchFunction():
            return hook(*args)

    return run


def _describe(value: Any) -> str:
    """A short description of a model output for error messages."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{key!r}: {tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}"
            for key, v in value.items()
        )
        return f"a {type(value).__name__} {{{items}}}"
    if isinstance(value, (tuple, list)):
        items = ", ".join(
            tuple(v.shape).__repr__() if isinstance(v, Tensor) else type(v).__name__ for v in value
        )
        return f"a {type(value).__name__} of {len(value)} ({items})"
    return f"a {type(value).__name__}"


def _output_advice(name: str, output: Any, logits: Any, selector: Any) -> str:
    """Why an output is not N×K logits, and which ``output=`` selector reads them."""
    got = _describe(output) if selector is None else f"{_describe(logits)} (selected by output={selector!r})"
    advice = "pass ModelAdapter(model, output=...) with a key, an index or a callable that returns N×K logits"
    if isinstance(logits, Mapping):
        keys = [k for k, v in logits.items() if isinstance(v, Tensor) and v.ndim == 2]
        advice = (
            f"pass ModelAdapter(model, output={keys[0] if keys else 'KEY'!r}) to use that entry as logits"
        )
    elif isinstance(logits, (tuple, list)):
        index = [i for i, v in enumerate(logits) if isinstance(v, Tensor) and v.ndim == 2]
        advice = f"pass ModelAdapter(model, output={index[0] if index else 0}) to use that item as logits"
    elif isinstance(logits, Tensor) and logits.ndim == 1:
        advice = (
            "one score per sample: pass ModelAdapter(model, output=lambda y: y[:, None]) and explain target 0 "
            "(for a binary classifier, lambda y: torch.stack([-y, y], 1) gives two classes)"
        )
    elif isinstance(logits, Tensor) and logits.ndim > 2:
        advice = (
            "a map per class (N×K×H×W, e.g. segmentation): pass ModelAdapter(model, output=lambda y: "
            "y.mean(dim=(2, 3))) or another callable that reduces it to N×K scores"
        )
    return f"{name} returns {got}; explanations need N×K logits (a tensor of shape N×classes): {advice}"


_ADAPTERS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, ModelAdapter]] = weakref.WeakKeyDictionary()


def structure(model: nn.Module) -> tuple:
    """A cheap fingerprint of a module tree: the identity of every submodule and parameter (≈50 µs for resnet18).

    It changes when a submodule or a parameter is replaced, added or removed (a new head), which is what a
    cached adapter's layer catalogue and class count depend on.
    """
    parts: list[Any] = []
    stack = [model]
    while stack:
        module = stack.pop()
        parts.append(module)
        parts.extend(module._parameters.values())
        stack.extend(m for m in module._modules.values() if m is not None)
    return tuple(map(id, parts))


def as_adapter(model: nn.Module | ModelAdapter, **kwargs: Any) -> ModelAdapter:
    """Return ``model`` if it is already an adapter, else wrap it (keyword arguments go to ModelAdapter).

    A plain module without keyword arguments gets a copy of one cached adapter: the copies share what the first
    call learnt (the layer catalogue at the images' size, the class count), so a call pays no new dummy forward;
    the cache is rebuilt when the module's structure changes (:func:`structure`). The cache is keyed weakly by
    the module and its template holds the module only weakly, so nothing is stored on the module and nothing
    keeps it alive; each returned copy holds the module, like any adapter.
    """
    if isinstance(model, ModelAdapter):
        return model
    if kwargs or not isinstance(model, nn.Module):
        return ModelAdapter(model, **kwargs)
    fingerprint = structure(model)
    try:
        cached = _ADAPTERS.get(model)
    except TypeError:  # a module made unhashable by its own __eq__
        return ModelAdapter(model)
    if cached is None or cached[0] != fingerprint:
        template = ModelAdapter(model)
        template._model, template._model_ref = None, weakref.ref(model)
        cached = _ADAPTERS[model] = (fingerprint, template)
    adapter = copy.copy(cached[1])
    adapter._model = model
    return adapter
