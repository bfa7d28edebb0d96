"""ModelAdapter: the one place that touches the user's ``nn.Module``.

It knows the model's device, preprocessing, labels and an ordered layer catalogue, and offers the few
operations every method is built from: multi-layer capture (one forward, one ``autograd.grad``),
temporary backward rules, forward with substituted parameters, and output replacement. Every hook and
temporary flag it installs is removed in ``finally``, so the user's model is exactly as before after any
call, also one that raised.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError, LayerError, TargetError

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


@dataclass(frozen=True)
class LayerInfo:
    """One entry of the layer catalogue, in forward order.

    ``out_shape`` is the output shape of one sample (without the batch dimension) at the adapter's
    ``input_size``; ``calls`` counts how often the module ran in one forward (torchvision reuses one ReLU).
    """

    name: str
    kind: str
    module: nn.Module = field(repr=False, compare=False)
    out_shape: tuple[int, ...] | None
    index: int
    calls: int = 1

    @property
    def spatial(self) -> bool:
        """True when the output has channels and a 2-D map (C×H×W): a layer a CAM can use."""
        return self.out_shape is not None and len(self.out_shape) == 3


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


class ModelAdapter:
    """Wraps an image classifier with what every explanation needs.

    Args:
        model: any ``nn.Module`` mapping an N×C×H×W float batch to N×K logits.
        mean, std: per-channel normalisation applied by :meth:`preprocess` (None: identity).
        labels: class names (length K), optional.
        input_size: (C, H, W) used to build the layer catalogue; default: the first conv's channels and 224×224.
        preprocess: optional callable mapping a float [0,1] N×C×H×W batch to model input; overrides mean/std.
        name: a display name.

    Example:
        >>> import torch, torchvision
        >>> adapter = ModelAdapter(torchvision.models.resnet18().eval(), input_size=(3, 64, 64))
        >>> [layer.name for layer in adapter.layers() if layer.spatial][-1]
        'layer4'
    """

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
    ) -> None:
        if isinstance(model, ModelAdapter):
            raise TypeError("model is already a ModelAdapter")
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.labels = None if labels is None else [str(label) for label in labels]
        self._preprocess = preprocess
        self.name = name or type(model).__name__
        self.info = dict(info or {})
        channels = self.in_channels
        self._explicit_size = input_size is not None
        self.input_size = tuple(input_size) if input_size is not None else (channels or 3, 224, 224)
        self._catalogue: list[LayerInfo] | None = None
        self._params: Mapping[str, Tensor] | None = None
        self._num_classes: int | None = len(self.labels) if self.labels else None

    # ------------------------------------------------------------------ basics
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
                logits = self._dummy_forward()
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
            mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std or (1.0,) * len(self.mean), device=images.device, dtype=images.dtype)
            images = (images - mean) / std.view(1, -1, 1, 1)
        return images

    def unpreprocess(self, x: Tensor) -> Tensor:
        """Invert the mean/std normalisation for display: model input back to pictures in [0, 1]."""
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std or (1.0,) * len(self.mean), device=x.device, dtype=x.dtype)
            x = x * std.view(1, -1, 1, 1) + mean
        return x.clamp(0, 1)

    def prepare(self, x: Any) -> Tensor:
        """Validate a model-input batch and move it to the device: N×C×H×W (C×H×W is promoted), float, finite."""
        if not isinstance(x, Tensor):
            raise InputError(
                f"the image must be a torch.Tensor (N×C×H×W or C×H×W float), got {type(x).__name__}; "
                "use xai_widgets.load_image for paths, PIL images and arrays"
            )
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

    # ---------------------------------------------------------------- layers
    def layers(self) -> list[LayerInfo]:
        """The layer catalogue: every submodule that runs in a forward at ``input_size``, in call order."""
        if self._catalogue is None:
            self._catalogue = self._build_catalogue()
        return self._catalogue

    def _build_catalogue(self) -> list[LayerInfo]:
        named = [(n, m) for n, m in self.model.named_modules() if n]
        order: dict[str, int] = {}
        shapes: dict[str, tuple[int, ...] | None] = {}
        calls: dict[str, int] = {}

        def make_hook(name: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
                calls[name] = calls.get(name, 0) + 1
                if name not in order:
                    order[name] = len(order)
                    shapes[name] = tuple(output.shape[1:]) if isinstance(output, Tensor) else None

            return hook

        handles = [m.register_forward_hook(make_hook(n)) for n, m in named]
        try:
            with torch.no_grad(), self.evaluating(), self.no_inplace():
                self._dummy_forward()
        finally:
            for handle in handles:
                handle.remove()
        modules = dict(named)
        # forward hooks fire in post-order: a block's output is listed right after its last child
        ranked = sorted(order, key=order.get)
        return [
            LayerInfo(n, layer_kind(modules[n]), modules[n], shapes[n], i, calls[n])
            for i, n in enumerate(ranked)
        ]

    def spatial_layers(self, kinds: Iterable[str] | None = None) -> list[LayerInfo]:
        """Layers with a C×H×W output (optionally only of the given kinds), in forward order."""
        wanted = None if kinds is None else set(kinds)
        return [
            layer for layer in self.layers() if layer.spatial and (wanted is None or layer.kind in wanted)
        ]

    def default_cam_layer(self) -> LayerInfo:
        """The last layer whose output is a C×H×W map larger than 1×1 (the usual CAM layer)."""
        candidates = [
            layer
            for layer in self.spatial_layers(("conv", "activation", "norm", "block", "pool"))
            if layer.out_shape[1] * layer.out_shape[2] > 1
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
                if entry.module is layer:
                    return entry
            raise LayerError(f"the module {type(layer).__name__} is not part of {self.name} (or never runs)")
        if not isinstance(layer, str):
            raise LayerError(f"a layer is given by name or module, got {type(layer).__name__}")
        for entry in catalogue:
            if entry.name == layer:
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
        forward: Mapping[nn.Module, Callable] | None = None,
        pre: Mapping[nn.Module, Callable] | None = None,
    ) -> Iterator[None]:
        """Install forward hooks (``forward[module]``, may return a replacement output) and forward pre-hooks.

        Both are removed in ``finally``; ``inplace`` flags are off meanwhile, so a replaced or captured output
        is never overwritten by a later in-place activation.
        """
        handles = []
        try:
            with self.no_inplace():
                for module, hook in (pre or {}).items():
                    handles.append(module.register_forward_pre_hook(hook))
                for module, hook in (forward or {}).items():
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
        forward = {m: r.forward_hook for m, r in assignment.items() if hasattr(r, "forward_hook")}
        pre = {m: r.forward_pre_hook for m, r in assignment.items() if hasattr(r, "forward_pre_hook")}
        with contextlib.ExitStack() as stack:
            for module, rule in assignment.items():
                if hasattr(rule, "context"):
                    stack.enter_context(rule.context(module))
            stack.enter_context(self.hooks(forward=forward, pre=pre))
            yield

    @contextlib.contextmanager
    def replace_output(self, layer: str | nn.Module, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
        """Within the block, ``layer``'s output is replaced by ``fn(output)`` (the hook *returns* it)."""
        module = self.resolve_layer(layer).module

        def hook(mod: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            return fn(output)

        with self.hooks(forward={module: hook}):
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
        """Logits of ``x``; with ``params`` (or inside :meth:`using_params`), computed with those parameters and
        buffers via ``functional_call``."""
        params = self._params if params is None else params
        if params is None:
            return self.model(x)
        return torch.func.functional_call(self.model, dict(params), (x,), strict=False)

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
    ) -> Capture:
        """One forward keeping the outputs of ``layers``, then one ``autograd.grad`` for all their gradients.

        The model runs in eval behaviour; captured outputs are shielded from later in-place operations
        (``out += identity``, in-place ReLU). Parameter ``.grad`` fields are never touched.
        """
        entries = [self.resolve_layer(layer) for layer in layers]
        x = self.prepare(x)
        acts: dict[str, Tensor] = {}

        def make_hook(name: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
                acts[name] = output
                return output.clone()

            return hook

        with contextlib.ExitStack() as stack:
            stack.enter_context(self.evaluating())
            stack.enter_context(self.hooks(forward={e.module: make_hook(e.name) for e in entries}))
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
        if not create_graph:
            acts = {k: v.detach() for k, v in acts.items()}
            logits, score = logits.detach(), score.detach()
        return Capture(
            logits, score, target if isinstance(target, Tensor) else None, acts, grad_map, input_gradient
        )


def as_adapter(model: nn.Module | ModelAdapter, **kwargs: Any) -> ModelAdapter:
    """Return ``model`` if it is already an adapter, else wrap it (keyword arguments go to ModelAdapter)."""
    if isinstance(model, ModelAdapter):
        return model
    return ModelAdapter(model, **kwargs)
