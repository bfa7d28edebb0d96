"""CAM family: class activation maps at a chosen layer.

Every CAM is a map over the spatial positions of one layer's activations A (N×K×h×w). One base
(:func:`layer_maps`) owns what all of them share: the layer capture (``ModelAdapter.capture``: one forward and
one ``autograd.grad`` for all requested layers), validation and the ReLU; :func:`upsample` brings a map to the
input size (bilinear, ``align_corners=False``). A variant is one small function:

* weight variants map (A, G = d score / d A) to channel weights w (N×K); the map is Σ_k w_k A_k;
* map variants map (A, G) directly to an N×h×w map.

The raw ``layer_map`` of an Explanation is signed and un-normalised; a variant whose paper ends with a ReLU
(Grad-CAM and its descendants, Score-CAM, Ablation-CAM) includes it, CAM, HiResCAM and Eigen-CAM are signed.

Example:
    >>> import torch, torchvision, xai_widgets as xw
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> e = xw.explain(model, torch.randn(1, 3, 64, 64), method="gradcam", layer="layer4")
    >>> tuple(e.layer_map.shape), tuple(e.attribution.shape)
    ((1, 2, 2), (1, 64, 64))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import LayerError, MethodError, UnsupportedModelError
from ..explanation import Explanation
from ..model import ModelAdapter
from ..registry import register_method

Progress = Callable[[int, int], None] | None


# --------------------------------------------------------------------------------------------- variants
def gradcam_weights(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1): α_k = mean_ij ∂y/∂A_kij."""
    return grads.mean(dim=(2, 3))


def gradcam_pp_weights(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 with exponential scores):
    a_kij = g² / (2g² + Σ_ab A_kab · g³), α_k = Σ_ij a_kij · ReLU(g_kij); a = 0 where g = 0."""
    g2 = grads.pow(2)
    total = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g2 * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grads.clamp_min(0)).sum(dim=(2, 3))


def xgradcam_weights(acts: Tensor, grads: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al. 2020, eq. 14): α_k = Σ_ij (A_kij / Σ_ab A_kab) ∂y/∂A_kij."""
    total = acts.sum(dim=(2, 3), keepdim=True)
    return (grads * acts / (total + 1e-7)).sum(dim=(2, 3))


def layercam_map(acts: Tensor, grads: Tensor) -> Tensor:
    """LayerCAM (Jiang et al. 2021, eq. 3–4): Σ_k ReLU(∂y/∂A_kij) · A_kij, per position."""
    return (grads.clamp_min(0) * acts).sum(dim=1)


def hirescam_map(acts: Tensor, grads: Tensor) -> Tensor:
    """HiResCAM (Draelos and Carin 2020): Σ_k ∂y/∂A_kij · A_kij, signed (no ReLU, no spatial averaging)."""
    return (grads * acts).sum(dim=1)


def eigencam_map(acts: Tensor) -> Tensor:
    """Eigen-CAM (Muhammad and Yeasin 2020): the activations (positions × channels, centred per channel)
    projected on their first principal component. The SVD leaves the sign free; it is fixed so that the
    larger magnitude is positive (|min| > |max| flips the map, as pytorch-grad-cam's sign correction).
    Half-precision activations are decomposed in float32 (torch has no half SVD); the map keeps their dtype."""
    n, k, h, w = acts.shape
    matrix = acts.reshape(n, k, h * w).transpose(1, 2)
    if matrix.dtype in (torch.float16, torch.bfloat16):
        matrix = matrix.float()
    matrix = matrix - matrix.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    projection = (matrix @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip.unsqueeze(1), -projection, projection)
    return projection.reshape(n, h, w).to(acts.dtype)


@dataclass(frozen=True)
class GradientCAM:
    """A gradient CAM variant: exactly one of ``weights`` (A, G → N×K) or ``combine`` (A, G → N×h×w)."""

    name: str
    weights: Callable[[Tensor, Tensor], Tensor] | None = None
    combine: Callable[[Tensor, Tensor], Tensor] | None = None
    relu: bool = True

    def layer_map(self, acts: Tensor, grads: Tensor | None) -> Tensor:
        """The raw N×h×w map of one layer from its activations and gradients (zero gradient if None)."""
        _check_spatial(acts, self.name)
        if grads is None:
            grads = torch.zeros_like(acts)
        if self.weights is not None:
            cam = torch.einsum("nk,nkhw->nhw", self.weights(acts, grads), acts)
        else:
            cam = self.combine(acts, grads)
        return cam.clamp_min(0) if self.relu else cam


GRADIENT_CAMS: dict[str, GradientCAM] = {
    "gradcam": GradientCAM("gradcam", weights=gradcam_weights),
    "gradcam_pp": GradientCAM("gradcam_pp", weights=gradcam_pp_weights),
    "xgradcam": GradientCAM("xgradcam", weights=xgradcam_weights),
    "layercam": GradientCAM("layercam", combine=layercam_map),
    "hirescam": GradientCAM("hirescam", combine=hirescam_map, relu=False),
}


# ------------------------------------------------------------------------------------------------- base
def _check_spatial(acts: Tensor, method: str, layer: str | None = None) -> None:
    if not isinstance(acts, Tensor) or acts.ndim != 4:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        where = f" at {layer!r}" if layer else ""
        raise LayerError(
            f"{method} needs a layer with a spatial N×C×H×W output; the output{where} is {shape}"
        )


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear upsampling (``align_corners=False``, as cv2.resize) of N×h×w maps to N×H×W."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


def layer_maps(
    adapter: ModelAdapter, x: Tensor, target, layers: Sequence[str], method: str
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Raw maps of a gradient CAM at all ``layers`` from ONE forward and ONE ``autograd.grad``.

    Returns ({layer: N×h×w map}, score, target). Used by the single-layer methods and by CAManim.
    """
    variant = GRADIENT_CAMS.get(method)
    if variant is None:
        raise MethodError(f"{method!r} is not a gradient CAM; use one of {', '.join(GRADIENT_CAMS)}")
    capture = adapter.capture(x, list(layers), target)
    maps = {}
    for name in layers:
        acts = capture.acts.get(name)
        if acts is None:
            raise LayerError(f"layer {name!r} did not run in the forward pass, so it has no map")
        _check_spatial(acts, method, name)
        maps[name] = variant.layer_map(acts, capture.grads.get(name))
    return maps, capture.score, capture.target if capture.target is not None else target


def _explanation(
    x: Tensor,
    target,
    layer: str,
    method: str,
    layer_map: Tensor,
    score: Tensor,
    options: dict | None = None,
    extras: dict | None = None,
) -> Explanation:
    layer_map = layer_map.detach()
    return Explanation(
        attribution=upsample(layer_map, x.shape[-2:]),
        method=method,
        target=target if isinstance(target, Tensor) else None,
        score=score.detach(),
        layer=layer,
        layer_map=layer_map,
        options=dict(options or {}),
        extras=dict(extras or {}),
    )


def _forward_acts(adapter: ModelAdapter, x: Tensor, target, layer: str, method: str) -> tuple[Tensor, object]:
    """Activations of ``layer`` from one forward without gradients (CAM, Eigen-CAM, Score-/Ablation-CAM)."""
    capture = adapter.capture(x, [layer], target, grads=False)
    acts = capture.acts.get(layer)
    if acts is None:
        raise LayerError(f"layer {layer!r} did not run in the forward pass, so it has no map")
    _check_spatial(acts, method, layer)
    return acts, capture


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MethodError(f"batch_size must be a positive int, got {batch_size!r}")


def _make_gradient_method(variant: GradientCAM) -> Callable[..., Explanation]:
    def method(adapter: ModelAdapter, x: Tensor, target, layer: str) -> Explanation:
        maps, score, target = layer_maps(adapter, x, target, [layer], variant.name)
        return _explanation(x, target, layer, variant.name, maps[layer], score)

    method.__name__ = variant.name
    method.__doc__ = (variant.weights or variant.combine).__doc__
    return method


def _make_multi_layer(variant: GradientCAM) -> Callable[..., tuple[dict[str, Tensor], Tensor]]:
    """The variant's raw maps at many layers from one forward and one backward (CAManim's single pass)."""

    def multi_layer(adapter: ModelAdapter, x: Tensor, target, layers: Sequence[str]):
        maps, score, _ = layer_maps(adapter, x, target, layers, variant.name)
        return maps, score

    return multi_layer


for _variant in GRADIENT_CAMS.values():
    register_method(
        _variant.name,
        _make_gradient_method(_variant),
        family="cam",
        needs_layer=True,
        cost="cheap",
        signed=not _variant.relu,
        multi_layer=_make_multi_layer(_variant),
    )


# ---------------------------------------------------------------------------------------------- CAM
def classifier_head(
    adapter: ModelAdapter, layer: str, acts: Tensor, logits: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Weight and bias of the Linear classifier that follows ``layer`` through a global average pool.

    The candidate is the last ``nn.Linear`` with K inputs and as many outputs as logits; the head is accepted
    only when logits = Linear(mean_ij A) holds numerically, so a head with anything else between the layer
    and the logits (another conv, a hidden dense layer, max pooling) raises UnsupportedModelError naming it.
    """
    names = [entry.name for entry in adapter.layers()]
    start = names.index(layer)
    linears = [
        entry
        for entry in adapter.layers()[start + 1 :]
        if isinstance(entry.module, nn.Linear)
        and entry.module.in_features == acts.shape[1]
        and entry.module.out_features == logits.shape[1]
    ]
    between = [f"{e.name} ({type(e.module).__name__})" for e in adapter.layers()[start + 1 :]]
    if len(between) > 6:
        between = [*between[:3], f"… {len(between) - 5} more …", *between[-2:]]
    if not linears:
        raise UnsupportedModelError(
            f"cam needs global average pooling + one Linear classifier after {layer!r}; the head is "
            f"{', '.join(between) or 'empty'}, with no Linear of {acts.shape[1]} inputs and {logits.shape[1]} "
            "outputs (use gradcam, which generalises CAM to any head)"
        )
    head = linears[-1]
    params = adapter.params_override or {}
    weight = params.get(f"{head.name}.weight", head.module.weight)
    bias = params.get(f"{head.name}.bias", head.module.bias)
    weight = weight.detach().to(acts)
    bias = None if bias is None else bias.detach().to(acts)
    expected = F.linear(acts.mean(dim=(2, 3)), weight, bias)
    scale = logits.abs().max().clamp_min(1.0)
    if not torch.allclose(expected, logits, rtol=1e-4, atol=1e-4 * float(scale)):
        raise UnsupportedModelError(
            f"cam needs the logits to be Linear(global average pool of {layer!r}); the head "
            f"{', '.join(between)} is not (use gradcam, which generalises CAM to any head)"
        )
    return weight, bias


@register_method("cam", family="cam", needs_layer=True, cost="cheap", every_layer=False)
def cam(adapter: ModelAdapter, x: Tensor, target, layer: str) -> Explanation:
    """CAM (Zhou et al. 2016, eq. 2): M_c = Σ_k w_ck A_k with w the classifier weights after global average
    pooling (signed, no bias). Needs a GAP + Linear head right after ``layer``."""
    acts, capture = _forward_acts(adapter, x, target, layer, "cam")
    target = capture.target if capture.target is not None else target
    if not isinstance(target, Tensor):
        raise MethodError("cam needs class indices as target (a callable target has no classifier row)")
    weight, _ = classifier_head(adapter, layer, acts, capture.logits)
    weights = weight[target]
    layer_map = torch.einsum("nk,nkhw->nhw", weights, acts)
    return _explanation(x, target, layer, "cam", layer_map, capture.score, extras={"weights": weights})


# ---------------------------------------------------------------------------------------- Eigen-CAM
def eigencam_layers(adapter: ModelAdapter, x: Tensor, target, layers: Sequence[str]) -> tuple[dict, Tensor]:
    """Eigen-CAM maps at many layers from one forward (no backward)."""
    capture = adapter.capture(x, list(layers), target, grads=False)
    missing = [name for name in layers if name not in capture.acts]
    if missing:
        raise LayerError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    return {name: eigencam_map(capture.acts[name]) for name in layers}, capture.score


@register_method("eigencam", family="cam", needs_layer=True, cost="cheap", multi_layer=eigencam_layers)
def eigencam(adapter: ModelAdapter, x: Tensor, target, layer: str) -> Explanation:
    """Eigen-CAM (Muhammad and Yeasin 2020): first principal component of the layer's activations, from the
    forward pass alone (class-agnostic: the target only sets the reported score)."""
    acts, capture = _forward_acts(adapter, x, target, layer, "eigencam")
    target = capture.target if capture.target is not None else target
    return _explanation(x, target, layer, "eigencam", eigencam_map(acts), capture.score)


# -------------------------------------------------------------------------------- perturbation CAMs
def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def scorecam_weights(
    adapter: ModelAdapter, x: Tensor, target, acts: Tensor, batch_size: int = 32, progress: Progress = None
) -> Tensor:
    """Score-CAM weights (Wang et al. 2020): each channel, upsampled and min-max scaled to [0, 1], masks the
    input; α = softmax over channels of the target score of the masked inputs (the baseline score of the
    paper's CIC cancels in the softmax). All N·K masked inputs run in chunks of ``batch_size``."""
    _check_batch_size(batch_size)
    n, k = acts.shape[:2]
    total = n * k
    scores = torch.empty(total, device=x.device, dtype=x.dtype)
    for start, stop in _chunks(total, batch_size):
        rows = torch.arange(start, stop, device=x.device)
        sample, channel = rows // k, rows % k
        masks = upsample(acts[sample, channel], x.shape[-2:])
        low = masks.flatten(1).amin(1).view(-1, 1, 1)
        width = masks.flatten(1).amax(1).view(-1, 1, 1) - low
        masks = torch.where(width > 0, (masks - low) / torch.where(width > 0, width, 1), 0)  # constant: 0
        with torch.no_grad():
            logits = adapter.forward(x[sample] * masks.unsqueeze(1))
        tgt = target[sample] if isinstance(target, Tensor) else target
        scores[start:stop] = adapter.score(logits, tgt)
        if progress is not None:
            progress(stop, total)
    return torch.softmax(scores.view(n, k), dim=1)


@register_method("scorecam", family="cam", needs_layer=True, cost="expensive")
def scorecam(
    adapter: ModelAdapter, x: Tensor, target, layer: str, batch_size: int = 32, progress: Progress = None
) -> Explanation:
    """Score-CAM (Wang et al. 2020): ReLU(Σ_k α_k A_k) with α from the scores of channel-masked inputs;
    gradient-free, N·K forwards batched ``batch_size`` at a time, progress(done, total) per chunk."""
    acts, capture = _forward_acts(adapter, x, target, layer, "scorecam")
    target = capture.target if capture.target is not None else target
    weights = scorecam_weights(adapter, x, target, acts, batch_size, progress)
    layer_map = torch.einsum("nk,nkhw->nhw", weights, acts).clamp_min(0)
    return _explanation(
        x,
        target,
        layer,
        "scorecam",
        layer_map,
        capture.score,
        {"batch_size": batch_size},
        {"weights": weights},
    )


def _ablated_scores(
    adapter: ModelAdapter, x: Tensor, target, module: str, channels: Tensor, shared: bool
) -> Tensor:
    """Target scores with channel ``channels[i]`` of layer ``module``'s output zeroed in row i (at exactly the
    call the catalogue name means, for a reused module), for one image ``x``
    (1×C×H×W). ``shared``: the part of the model before ``module`` runs once and its output is expanded to
    the rows inside the hook; otherwise the image is repeated and the whole model runs for every row."""
    b = channels.numel()
    rows = torch.arange(b, device=x.device)
    layout = adapter.resolve_layer(module).layout
    if layout is not None and layout.kind == "custom":
        raise UnsupportedModelError(
            f"ablationcam zeroes channels of {module!r} in place of its output, which a reshape_transform cannot "
            "write back; use gradcam or scorecam at this layer"
        )

    def zero_channel(mod: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        out = output.expand(b, *output.shape[1:]).clone() if output.shape[0] == 1 else output.clone()
        view = out if layout is None else layout.to_map(out)  # tokens, channels last: a view of ``out``
        view[rows, channels] = 0
        return out

    tgt = target.expand(b) if isinstance(target, Tensor) else target
    with torch.no_grad(), adapter.hooks(forward={module: zero_channel}):
        logits = adapter.forward(x if shared else x.expand(b, *x.shape[1:]))
    return adapter.score(logits, tgt)


def ablationcam_weights(
    adapter: ModelAdapter,
    x: Tensor,
    target,
    layer: str,
    acts: Tensor,
    score: Tensor,
    batch_size: int = 32,
    progress: Progress = None,
) -> Tensor:
    """Ablation-CAM weights (Desai and Ramaswamy 2020, eq. 2): w_k = (y − y_k) / |y| with y_k the target score
    when channel k of ``layer`` is set to zero (|y| keeps the map's sign independent of the logit's sign; for
    a positive score it is the paper's y). The K ablations of each image run ``batch_size`` at a time.

    The layers before ``layer`` see the same image in every ablation, so they run once per chunk and the
    layer's output is expanded to the chunk (batch 1 broadcasts against skip connections). Models where that
    raises or disagrees with the full forward on the first ablation (checked once) run the full model for
    every ablation instead.
    """
    _check_batch_size(batch_size)
    n, k = acts.shape[:2]
    ablated = torch.empty(n, k, device=x.device, dtype=x.dtype)
    module = adapter.resolve_layer(layer).name
    shared: bool | None = None
    for s in range(n):
        image = x[s : s + 1]
        tgt = target[s : s + 1] if isinstance(target, Tensor) else target
        for start, stop in _chunks(k, batch_size):
            channels = torch.arange(start, stop, device=x.device)
            scores = None
            if shared is not False:
                try:
                    scores = _ablated_scores(adapter, image, tgt, module, channels, shared=True)
                except RuntimeError:
                    scores = None
                if shared is None:
                    reference = _ablated_scores(adapter, image, tgt, module, channels[:1], shared=False)
                    shared = scores is not None and bool(
                        torch.allclose(
                            scores[:1], reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()) + 1e-6
                        )
                    )
            if not shared:
                scores = _ablated_scores(adapter, image, tgt, module, channels, shared=False)
            ablated[s, start:stop] = scores
            if progress is not None:
                progress(s * k + stop, n * k)
    return (score.view(n, 1) - ablated) / score.abs().clamp_min(1e-12).view(n, 1)


@register_method("ablationcam", family="cam", needs_layer=True, cost="expensive")
def ablationcam(
    adapter: ModelAdapter, x: Tensor, target, layer: str, batch_size: int = 32, progress: Progress = None
) -> Explanation:
    """Ablation-CAM (Desai and Ramaswamy 2020): ReLU(Σ_k w_k A_k) with w the relative score drop when channel
    k is zeroed; gradient-free, N·K ablations batched ``batch_size`` at a time (the layers before ``layer`` run
    once per batch), progress(done, total)."""
    acts, capture = _forward_acts(adapter, x, target, layer, "ablationcam")
    target = capture.target if capture.target is not None else target
    weights = ablationcam_weights(adapter, x, target, layer, acts, capture.score, batch_size, progress)
    layer_map = torch.einsum("nk,nkhw->nhw", weights, acts).clamp_min(0)
    return _explanation(
        x,
        target,
        layer,
        "ablationcam",
        layer_map,
        capture.score,
        {"batch_size": batch_size},
        {"weights": weights},
    )
