"""CAManim: a class activation map at every layer with a spatial output, as one film (Kaczmarek et al. 2023).

The published tool runs one forward and one backward per layer. Here the gradient CAMs (Grad-CAM, Grad-CAM++,
XGrad-CAM, LayerCAM, HiResCAM) of all layers come from ONE forward and ONE ``autograd.grad`` over every
captured activation, Eigen-CAM from the forward alone (methods registered with ``multi_layer``), and
Score-CAM/Ablation-CAM (or any registered layer method) layer by layer, batched, with progress.

(The module is ``xai_widgets.all_layers``, not ``xai_widgets.camanim``: a submodule named like the public
function ``xw.camanim`` would replace it on the package once imported.)

Normalisation (a display choice, the raw maps are kept):

* **local**: each layer (and sample) min-max scaled to [0, 1] on its own (after upsampling, as
  pytorch-grad-cam): shows where each layer looks;
* **global**: all layers of a sample scaled by ONE min and max taken over the raw (un-normalised, upsampled)
  maps of all layers, so magnitudes compare across layers (the published tool normalised each map before
  its "global" step, which made global equal to local).

Example:
    >>> import torch, torchvision, xai_widgets as xw
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> film = xw.camanim(model, torch.randn(1, 3, 64, 64), target=3)
    >>> film.names[:3], tuple(film.maps.shape)[1:]
    (['conv1', 'layer1.0.conv1', 'layer1.0.conv2'], (1, 64, 64))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError, LayerError, MethodError
from .explanation import Explanation
from .methods.cam import upsample
from .model import LayerInfo, ModelAdapter, Target, as_adapter, gradients_enabled
from .registry import MethodInfo, get_method, methods

Progress = Callable[[int, int], None] | None

DEFAULT_KINDS = ("conv", "block")
KINDS = ("conv", "block", "norm", "activation", "pool", "other")


def _scale(maps: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """(maps − low) / (high − low) in [0, 1]; a map flat to float precision (range below 1e-6 of its
    magnitude, e.g. a 1×1 layer) stays flat instead of blowing rounding noise up to the full range."""
    span = (high - low).clamp_min(1e-6 * torch.maximum(high.abs(), low.abs())).clamp_min(1e-30)
    return ((maps - low) / span).clamp(0, 1)


@dataclass
class CAManimResult:
    """One CAM per layer, in forward order.

    Attributes:
        names, kinds: catalogue name and kind of each layer (L entries).
        resolutions: (h, w) of each layer's raw map.
        raw: L raw signed maps, N×h×w each, exactly as the method defines them (no normalisation).
        maps: L×N×H×W raw maps upsampled bilinearly to the input size.
        method: the CAM method; target: N class indices (None for a callable target); score: N target scores.
        image: N×C×H×W input mapped back to [0, 1] for display (the adapter's ``unpreprocess``).
    """

    names: list[str]
    kinds: list[str]
    resolutions: list[tuple[int, int]]
    raw: list[Tensor]
    maps: Tensor
    method: str
    target: Tensor | None
    score: Tensor
    image: Tensor
    adapter: ModelAdapter = field(repr=False)
    x: Tensor = field(repr=False)
    target_spec: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def local(self) -> Tensor:
        """L×N×H×W, each layer and sample min-max scaled to [0, 1] on its own (its brightest pixel is 1)."""
        flat = self.maps.flatten(2)
        return _scale(self.maps, flat.amin(2)[..., None, None], flat.amax(2)[..., None, None])

    def global_(self) -> Tensor:
        """L×N×H×W scaled by ONE min/max per sample taken over the un-normalised maps of ALL layers, so
        magnitudes compare across layers (never normalise each layer first: that makes global = local)."""
        flat = self.maps.transpose(0, 1).flatten(1)
        return _scale(self.maps, flat.amin(1).view(1, -1, 1, 1), flat.amax(1).view(1, -1, 1, 1))

    def normalized(self, mode: str = "local") -> Tensor:
        """``local()`` or ``global_()`` by name."""
        if mode == "local":
            return self.local()
        if mode == "global":
            return self.global_()
        raise InputError(f"unknown normalisation {mode!r}; use 'local' or 'global'")

    def frames(self, mode: str = "local", sample: int = 0) -> Tensor:
        """uint8 L×H×W stack of one sample, normalised by ``mode`` (what the player sends to the browser)."""
        if not 0 <= sample < self.maps.shape[1]:
            raise InputError(f"sample {sample} is out of range: the batch has {self.maps.shape[1]} images")
        return (self.normalized(mode)[:, sample] * 255).round().to(torch.uint8).cpu()

    def explanation(self, index: int | str) -> Explanation:
        """One layer's map as an Explanation (as ``explain(..., layer=name)`` would return it)."""
        i = self.names.index(index) if isinstance(index, str) else index
        return Explanation(
            attribution=self.maps[i],
            method=self.method,
            target=self.target,
            score=self.score,
            layer=self.names[i],
            layer_map=self.raw[i],
        )

    def road(
        self,
        percentiles: Sequence[float] = (20, 40, 60, 80),
        noise: float = 0.01,
        seed: int = 0,
        batch_size: int = 64,
        progress: Progress = None,
    ) -> LayerROAD:
        """ybROAD of every layer's map (see :func:`xai_widgets.metrics.road.ybroad`), best layer marked.

        ROAD ranks pixels, so the raw upsampled maps give the same result as any monotone normalisation.
        """
        from .metrics.road import ybroad

        scores = ybroad(
            self.adapter,
            self.x,
            self.maps,
            self.target_spec,
            percentiles,
            noise=noise,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        return LayerROAD(self.names, scores.score, scores.morf, scores.lerf, tuple(scores.percentiles))

    def save(self, path: str | Path, **options: Any) -> Path:
        """Export as MP4, GIF (by suffix) or PNG contact sheet; see :mod:`xai_widgets.export`."""
        from .export import save

        return save(self, path, **options)

    def cpu(self) -> CAManimResult:
        """A copy with the maps on the CPU."""
        return CAManimResult(
            self.names,
            self.kinds,
            self.resolutions,
            [r.cpu() for r in self.raw],
            self.maps.cpu(),
            self.method,
            None if self.target is None else self.target.cpu(),
            self.score.cpu(),
            self.image.cpu(),
            self.adapter,
            self.x,
            self.target_spec,
        )


@dataclass
class LayerROAD:
    """ybROAD per layer: ``score`` is L×N; ``morf``/``lerf`` are L×N×P target probabilities."""

    names: list[str]
    score: Tensor
    morf: Tensor
    lerf: Tensor
    percentiles: tuple[float, ...]

    @property
    def best(self) -> Tensor:
        """Index of the most faithful layer (highest ybROAD) per sample."""
        return self.score.argmax(dim=0)

    def best_layer(self, sample: int = 0) -> str:
        return self.names[int(self.best[sample])]


def select_layers(
    adapter: ModelAdapter,
    layers: str | Sequence[str | nn.Module] = "all",
    kinds: Iterable[str] = DEFAULT_KINDS,
) -> list[LayerInfo]:
    """The layers of the film: ``"all"`` takes every spatial layer of the given kinds in forward order
    (conv and block outputs by default; add ``"norm"``, ``"activation"``, ``"pool"`` as wanted); a list
    names them (each must have a spatial output)."""
    if isinstance(layers, str):
        if layers != "all":
            raise LayerError(f"layers must be 'all' or a list of layer names, got {layers!r}")
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise LayerError(
                f"unknown layer kind(s) {', '.join(map(repr, unknown))}; use some of {', '.join(KINDS)}"
            )
        chosen = adapter.spatial_layers(kinds)
        if not chosen:
            raise LayerError(f"{adapter.name} has no layer of kinds {', '.join(kinds)} with a spatial output")
        return chosen
    chosen = [adapter.resolve_layer(layer) for layer in layers]
    if not chosen:
        raise LayerError("layers is empty; give 'all' or at least one layer name")
    flat = [entry.name for entry in chosen if not entry.spatial]
    if flat:
        raise LayerError(f"CAManim needs layers with a spatial C×H×W output; {', '.join(flat)} have none")
    return sorted(chosen, key=lambda entry: entry.index)


def film_methods() -> list[MethodInfo]:
    """The registered methods CAManim can film (``every_layer``: a map at every spatial layer), in
    registration order; a user-registered CAM is among them."""
    return [info for info in methods() if info.every_layer]


@gradients_enabled()
def camanim(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    target: Target = None,
    method: str = "gradcam",
    layers: str | Sequence[str | nn.Module] = "all",
    kinds: Iterable[str] = DEFAULT_KINDS,
    progress: Progress = None,
    batch_size: int = 32,
) -> CAManimResult:
    """A CAM at every spatial layer of ``model`` for the batch ``x``, in forward order.

    Args:
        model: an ``nn.Module`` or a ModelAdapter.
        x: model input, N×C×H×W or C×H×W float.
        target: class index, one per sample, None for the predicted class, or a callable on the logits.
        method: ``gradcam``, ``gradcam_pp``, ``xgradcam``, ``layercam``, ``hirescam`` (one forward and one
            backward for all layers), ``eigencam`` (one forward), ``scorecam``, ``ablationcam`` or any
            registered layer method (layer by layer); :func:`film_methods` lists them.
        layers: ``"all"`` or a list of layer names/modules.
        kinds: layer kinds taken by ``"all"``: conv and block outputs by default; add ``"norm"``,
            ``"activation"`` or ``"pool"``. A module that runs several times (torchvision's shared ReLU) has
            one layer per call (``layer1.0.relu#1``, then ``layer1.0.relu`` for the last call).
        progress: ``progress(done, total)``; may raise ``Cancelled``.
        batch_size: forwards per chunk for methods that take one (Score-CAM/Ablation-CAM).

    Returns:
        A CAManimResult; ``.local()``, ``.global_()``, ``.road()``, ``.save(path)``.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (gradients are enabled for the call).
    """
    adapter = as_adapter(model)
    info = get_method(method)
    if not info.needs_layer:
        raise MethodError(f"CAManim needs a layer method (family 'cam'); {method!r} works on the input")
    if not info.every_layer:
        films = ", ".join(i.name for i in film_methods())
        raise MethodError(
            f"{method!r} has no map at every layer (e.g. cam is defined only at the layer followed by global "
            f"average pooling; use gradcam, which equals CAM there); CAManim films {films}"
        )
    x = adapter.prepare(x)
    entries = select_layers(adapter, layers, kinds)
    names = [entry.name for entry in entries]
    with adapter.evaluating():
        resolved = adapter.resolve_target(target, x)
        if info.multi_layer is not None:
            raw, score = info.multi_layer(adapter, x, resolved, names)
            if progress is not None:
                progress(len(names), len(names))
        else:
            raw, score = _per_layer(adapter, x, resolved, info, entries, progress, batch_size)
    size = x.shape[-2:]
    maps = [raw[name].detach() for name in names]
    return CAManimResult(
        names=names,
        kinds=[entry.kind for entry in entries],
        resolutions=[tuple(m.shape[-2:]) for m in maps],
        raw=maps,
        maps=torch.stack([upsample(m, size) for m in maps]),
        method=method,
        target=resolved if isinstance(resolved, Tensor) else None,
        score=score.detach(),
        image=adapter.unpreprocess(x.detach()),
        adapter=adapter,
        x=x,
        target_spec=resolved,
    )


def _per_layer(
    adapter: ModelAdapter,
    x: Tensor,
    target: Any,
    info: MethodInfo,
    entries: list[LayerInfo],
    progress: Progress,
    batch_size: int,
) -> tuple[dict[str, Tensor], Tensor]:
    """Layer-by-layer maps of a method without a single-pass form (Score-CAM, Ablation-CAM, user methods).

    Progress counts forwards for methods with a ``batch_size`` (N·K per layer: perturbation CAMs) and layers
    otherwise; a method that reports its own progress is scaled into its layer's share.
    """
    n = x.shape[0]
    sizes = [n * entry.out_shape[0] if info.takes_batch_size else 1 for entry in entries]
    total, done = sum(sizes), 0
    raw: dict[str, Tensor] = {}
    score = None
    for entry, size in zip(entries, sizes):
        options: dict[str, Any] = {"batch_size": batch_size} if info.takes_batch_size else {}
        if info.takes_progress:

            def report(step: int, steps: int, offset: int = done, size: int = size) -> None:
                if progress is not None:
                    progress(offset + (size * step) // max(steps, 1), total)

            options["progress"] = report
        result = info.fn(adapter, x, target, layer=entry.name, **options)
        if isinstance(result, Explanation):
            layer_map = result.layer_map if result.layer_map is not None else result.attribution
            score = result.score if score is None else score
        elif isinstance(result, Tensor) and result.ndim == 3:
            layer_map = result
        else:
            raise MethodError(f"method {info.name!r} returned no N×h×w map at layer {entry.name!r}")
        raw[entry.name] = layer_map.detach()
        done += size
        if progress is not None and not info.takes_progress:
            progress(done, total)
    if score is None:
        with torch.no_grad():
            score = adapter.score(adapter.forward(x), target)
    return raw, score
