"""Activation maximization: the input that drives a class, a channel or a unit the most, found by ascent.

For an objective f (a class logit, a layer's channel mean, or one unit) the picture is optimised,
x ← x + step(∇ₓ f(x)), for a batch of starting points at once. Linse, Barth and Martinetz (IJCNN 2024,
arXiv 2410.16958) show why this often stalls or ends in a saturated ("white") image on ReLU and Leaky-ReLU
networks: an inactive unit passes no (or a tiny) gradient. Their fix keeps the forward and takes the gradient
with a larger negative slope (``backward_slope``; see :mod:`xai_widgets.methods.backward_slope`).

Pictures live in [0, 1] and pass through the adapter's preprocessing. ``range=(lo, hi)`` instead optimises the
model input itself inside the box [lo, hi] (the paper's setting is ``range=(-1, 1)`` for a network trained on
inputs in [−1, 1]); start, learning rate and clipping are then in the box's units, exactly.

Options, all off by default so the effect of the slope is visible: the parameterisation (``"pixel"`` with
clipping, ``"tanh"``, or ``"fourier"`` with decorrelated colour, Olah et al., Distill 2017), transformation
robustness (jitter, scale, rotate), and regularisers (total variation, Gaussian blur, Yosinski et al. 2015).

Example:
    >>> import xai_widgets as xw
    >>> result = xw.maximize("shapes-leaky", target=2, steps=32, n=2, backward_slope=0.3)  # doctest: +SKIP
    >>> result.images.shape, result.activations[-1], result.saturation.mean()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError, LayerError, MethodError, TargetError
from .methods.backward_slope import check_slope
from .model import LayerInfo, ModelAdapter, gradients_enabled

Progress = Callable[[int, int], None] | None
Preview = Callable[[int, Tensor, Tensor], None] | None

OPTIMIZERS = ("ascent", "normalized", "adam")
PARAMETERIZATIONS = ("pixel", "tanh", "fourier")
DEFAULT_LR = {"ascent": 0.1, "normalized": 0.01, "adam": 0.05}
_BOUND = 1.0 / 255.0
_range = range  # ``maximize`` has an option named range

# Colour correlation of natural images (square root of its covariance, ImageNet statistics as used by Lucid),
# normalised by its largest column norm: the Fourier parameterisation optimises decorrelated colour.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


# --------------------------------------------------------------------------------------------- result
@dataclass
class MaximizationResult:
    """What one activation maximization produced.

    Attributes:
        images: N×C×H×W final pictures in [0, 1] (the box rescaled to [0, 1] when ``range`` was given).
        activations: (steps + 1)×N objective values: entry k is the value after k steps (entry 0 at the start).
            With transforms, entries 0..steps−1 are the values on the transformed pictures the step used.
        saturation: N×C share of each channel's pixel values within 1/255 of a bound (0 or 1).
        white: N share of pixels whose every channel is within 1/255 of the upper bound.
        snapshots: S×N×C×H×W uint8 pictures taken every ``snapshot_every`` steps (and at the end);
            ``snapshot_steps`` says after how many steps each was taken.
        objective: words for what was maximised; options: the settings used.
    """

    images: Tensor
    activations: Tensor
    saturation: Tensor
    white: Tensor
    snapshots: Tensor
    snapshot_steps: list[int]
    objective: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> Tensor:
        """The objective of the final pictures (N values)."""
        return self.activations[-1]

    def frames(self, sample: int | None = None) -> np.ndarray:
        """The snapshots as S×H×W'×3 uint8 frames: one sample, or all samples side by side (None)."""
        snaps = self.snapshots if sample is None else self.snapshots[:, sample : sample + 1]
        if snaps.shape[2] == 1:
            snaps = snaps.expand(-1, -1, 3, -1, -1)
        # S×N×C×H×W → S×H×(N·W)×C
        return snaps.permute(0, 3, 1, 4, 2).reshape(snaps.shape[0], snaps.shape[3], -1, 3).numpy()

    def save(self, path: str | Path, sample: int | None = None, scale: int = 4, fps: float = 8.0) -> Path:
        """Write the final pictures (.png) or the optimisation as an animation (.gif), ``scale``× enlarged
        (nearest neighbour, so single pixels stay visible)."""
        from PIL import Image

        path = Path(path)
        if not isinstance(scale, int) or scale < 1:
            raise InputError(f"scale must be a positive int, got {scale!r}")
        frames = self.frames(sample).repeat(scale, axis=1).repeat(scale, axis=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".png":
            Image.fromarray(frames[-1]).save(path)
        elif suffix == ".gif":
            if not fps > 0:
                raise InputError(f"fps must be positive, got {fps}")
            images = [
                Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
                for f in frames
            ]
            images[0].save(path, save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)
        else:
            raise InputError(f"cannot export to {path.name!r}: use a .png or .gif file name")
        return path


def saturation(pictures: Tensor) -> tuple[Tensor, Tensor]:
    """Per channel, the share of values within 1/255 of 0 or 1 (N×C); per picture, the share of white pixels
    (every channel within 1/255 of 1; N)."""
    low, high = pictures <= _BOUND, pictures >= 1.0 - _BOUND
    return (low | high).flatten(2).float().mean(2), high.all(1).flatten(1).float().mean(1)


# ------------------------------------------------------------------------------------------ objective
@dataclass
class Objective:
    """What is maximised: a class logit (``layer`` None) or a layer's channel mean / single unit."""

    description: str
    layer: LayerInfo | None
    classes: Tensor | None = None
    channel: int | None = None
    index: tuple[int, ...] | None = None

    def value(self, out: Tensor) -> Tensor:
        """N values from the logits (class objective) or the layer's output."""
        if self.layer is None:
            return out.gather(1, self.classes.expand(out.shape[0]).view(-1, 1)).squeeze(1)
        if self.channel is not None:
            return out[:, self.channel].flatten(1).mean(1)
        return out[(slice(None), *self.index)]


def _unit_error(unit: Any, layer: LayerInfo, accepted: str) -> TargetError:
    shape = "×".join(map(str, layer.out_shape))
    return TargetError(f"unit {unit!r} does not exist in layer {layer.name!r} (output {shape}): {accepted}")


def resolve_objective(
    adapter: ModelAdapter, target: Any, layer: Any, unit: Any, n: int | None
) -> tuple[Objective, int]:
    """Check the target/layer/unit and return the objective with the number of starting points."""
    if layer is None:
        if unit is not None:
            raise TargetError("a unit needs a layer: give layer= (a name from adapter.layers()) with unit=")
        if target is None:
            raise TargetError("give a class (target=int) or a layer and a unit (layer=..., unit=...)")
        classes = (
            [target] if isinstance(target, int) else list(target) if isinstance(target, Sequence) else None
        )
        if not classes or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in classes):
            raise TargetError(
                f"target must be a class index or a list of them (one per start), got {target!r}"
            )
        num = adapter.num_classes
        bad = [int(c) for c in classes if not 0 <= int(c) < num]
        if bad:
            raise TargetError(f"target {bad[0]} is out of range: {adapter.name} has classes 0..{num - 1}")
        if n is None:
            n = len(classes)
        if len(classes) not in (1, n):
            raise TargetError(f"got {len(classes)} targets for n={n} starting points (give 1 or {n})")
        indices = torch.tensor([int(c) for c in classes])
        names = sorted({adapter.label(int(c)) for c in classes})
        return Objective(f"class {', '.join(names)}", None, classes=indices.to(adapter.device)), n
    if target is not None:
        raise TargetError("give either a class (target=) or a layer and unit (layer=, unit=), not both")
    entry = adapter.resolve_layer(layer)
    if entry.out_shape is None:
        raise LayerError(f"layer {entry.name!r} does not output a single tensor; choose another layer")
    if unit is None:
        raise TargetError(f"layer {entry.name!r} needs a unit: a channel index, or a tuple index of one unit")
    shape = entry.out_shape
    n = 1 if n is None else n
    if isinstance(unit, (int, np.integer)) and not isinstance(unit, bool):
        unit = int(unit)
        if len(shape) == 1:
            if not 0 <= unit < shape[0]:
                raise _unit_error(unit, entry, f"its units are 0..{shape[0] - 1}")
            return Objective(f"{entry.name} unit {unit}", entry, index=(unit,)), n
        if not 0 <= unit < shape[0]:
            raise _unit_error(unit, entry, f"its channels are 0..{shape[0] - 1}")
        return Objective(f"{entry.name} channel {unit} (mean)", entry, channel=unit), n
    if isinstance(unit, Sequence) and all(isinstance(u, (int, np.integer)) for u in unit):
        index = tuple(int(u) for u in unit)
        if len(index) != len(shape) or any(not 0 <= u < s for u, s in zip(index, shape)):
            ranges = ", ".join(f"0..{s - 1}" for s in shape)
            raise _unit_error(unit, entry, f"a unit is a {len(shape)}-tuple with entries in {ranges}")
        return Objective(f"{entry.name} unit {index}", entry, index=index), n
    raise TargetError(f"unit must be an int (a channel) or a tuple index (one unit), got {unit!r}")


class _Reached(Exception):
    """Stops a forward once the objective's layer has run (the rest of the network is not needed)."""


@contextlib.contextmanager
def objective_forward(adapter: ModelAdapter, objective: Objective) -> Iterator[Callable[..., Tensor]]:
    """Within the block, ``run(x)`` gives the N objective values of model input ``x`` (``run(x, raw=True)``:
    the layer's whole output, or the logits).

    A layer objective reads the layer's output from a forward hook on exactly the call its catalogue entry
    names (``'layer1.0.relu#1'``: the first call of a reused module) and stops the forward there: the rest
    of the network is not needed.
    """
    if objective.layer is None:
        yield lambda x, raw=False: adapter.forward(x) if raw else objective.value(adapter.forward(x))
        return
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        captured.append(output)
        raise _Reached

    def run(x: Tensor, raw: bool = False) -> Tensor:
        captured.clear()
        try:
            adapter.forward(x)
        except _Reached:
            pass
        if not captured:
            raise LayerError(f"layer {objective.layer.name!r} did not run in the forward")
        out = captured.pop()
        return out if raw else objective.value(out)

    with adapter.hooks(forward={objective.layer: hook}):
        yield run


# ------------------------------------------------------------------------------------ parameterisation
class Parameterization:
    """Maps the optimised tensor to pictures in [0, 1] (N×C×H×W) and back into its domain after a step."""

    def __init__(self, kind: str, shape: tuple[int, ...], device: torch.device, noise: float) -> None:
        self.kind, self.shape, self.noise = kind, shape, noise
        n, c, h, w = shape
        if kind == "fourier":
            fy = torch.fft.fftfreq(h, device=device).view(-1, 1)
            fx = torch.fft.rfftfreq(w, device=device).view(1, -1)
            self.scale = 1.0 / torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / max(h, w))
            self.color = _COLOR.to(device) if c == 3 else torch.eye(c, device=device)

    def init(self, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Start values: uniform noise of width ``noise`` around mid-grey (pixel, tanh); for Fourier a small
        random spectrum whose picture is mid-grey plus faint noise."""
        n, c, h, w = self.shape
        if self.kind == "fourier":
            spectrum = torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * 0.01
            return spectrum.to(device, dtype)
        picture = 0.5 + self.noise * (torch.rand(self.shape, generator=generator) - 0.5)
        picture = picture.to(device, dtype)
        return torch.atanh(2 * picture - 1) if self.kind == "tanh" else picture

    def picture(self, param: Tensor) -> Tensor:
        if self.kind == "pixel":
            return param
        if self.kind == "tanh":
            return (torch.tanh(param) + 1) / 2
        h, w = self.shape[2:]
        spectrum = torch.view_as_complex(param.contiguous()) * self.scale
        image = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / 4.0
        image = torch.einsum("dc,nchw->ndhw", self.color, image)
        return torch.sigmoid(image)

    def project(self, param: Tensor) -> None:
        if self.kind == "pixel":
            param.clamp_(0.0, 1.0)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (radius 3σ, reflected edges), per channel."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def total_variation(pictures: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels, per picture (N)."""
    dy = (pictures[:, :, 1:] - pictures[:, :, :-1]).abs().flatten(1).mean(1)
    dx = (pictures[:, :, :, 1:] - pictures[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def random_transform(
    pictures: Tensor, generator: torch.Generator, jitter: int, scale: float, rotate: float
) -> Tensor:
    """One random shift (±``jitter`` px), scale (×[1 − s, 1 + s]) and rotation (±``rotate``°) per picture,
    with reflected borders (transformation robustness, Olah et al. 2017)."""
    n, _, h, w = pictures.shape
    rand = torch.rand(n, 4, generator=generator) * 2 - 1
    angle = rand[:, 0] * math.radians(rotate)
    factor = 1.0 + rand[:, 1] * scale
    shift = rand[:, 2:] * (2.0 * jitter / torch.tensor([w, h]))
    cos, sin = angle.cos() / factor, angle.sin() / factor
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(pictures), list(pictures.shape), align_corners=False)
    return F.grid_sample(pictures, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# -------------------------------------------------------------------------------------------- driver
def _check_options(steps: int, lr: Any, optimizer: str, parameterization: str, box: Any) -> tuple:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be a non-negative int, got {steps!r}")
    if optimizer not in OPTIMIZERS:
        raise MethodError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if parameterization not in PARAMETERIZATIONS:
        raise MethodError(
            f"unknown parameterization {parameterization!r}; use one of {', '.join(PARAMETERIZATIONS)}"
        )
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    if box is not None:
        if not isinstance(box, Sequence) or len(box) != 2 or not float(box[0]) < float(box[1]):
            raise InputError(f"range must be (low, high) with low < high, got {box!r}")
        box = (float(box[0]), float(box[1]))
    return float(lr), box


def _to_adapter(model: Any) -> ModelAdapter:
    if isinstance(model, str):
        from . import zoo

        return zoo.load(model)
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, nn.Module):
        return ModelAdapter(model)
    raise InputError(f"model must be an nn.Module, a ModelAdapter or a zoo name, got {type(model).__name__}")


def maximize(
    model: nn.Module | ModelAdapter | str,
    target: int | Sequence[int] | None = None,
    layer: str | nn.Module | None = None,
    unit: int | Sequence[int] | None = None,
    *,
    n: int | None = None,
    steps: int = 128,
    lr: float | None = None,
    optimizer: str = "ascent",
    backward_slope: float | None = None,
    parameterization: str = "pixel",
    range: tuple[float, float] | None = None,  # shadows the builtin: the module uses _range
    size: tuple[int, int] | None = None,
    noise: float = 0.2,
    jitter: int = 0,
    scale: float = 0.0,
    rotate: float = 0.0,
    tv: float = 0.0,
    blur: float = 0.0,
    seed: int = 0,
    snapshot_every: int | None = None,
    progress: Progress = None,
    preview: Preview = None,
) -> MaximizationResult:
    """Optimise ``n`` starting pictures (one batch) to maximise a class logit, a channel or a unit.

    Args:
        model: an ``nn.Module`` classifier, a ModelAdapter or a zoo name (``"shapes-leaky"``).
        target: the class whose logit is maximised (or one class per start); ``layer`` must then be None.
        layer, unit: a layer of ``adapter.layers()`` and its unit: an int is a channel (its mean over the map)
            for a C×H×W output or a unit of a flat output; a tuple ``(c, y, x)`` is one unit.
        n: starting points (default 1, or one per class of ``target``).
        steps, lr: optimisation steps and step size (default per optimiser: ascent 0.1, normalized 0.01,
            adam 0.05, in units of the box).
        optimizer: ``"ascent"`` (x += lr·g), ``"normalized"`` (x += lr·g/rms(g) per picture) or ``"adam"``.
        backward_slope: the negative slope every ReLU/LeakyReLU uses in the backward (None: the model's own).
        parameterization: ``"pixel"`` (clipped to the box), ``"tanh"`` (squashed into it) or ``"fourier"``
            (scaled spectrum, decorrelated colour, sigmoid; Olah et al. 2017).
        range: (lo, hi): optimise the model input itself inside [lo, hi], bypassing the preprocessing (the
            paper: (−1, 1)). Default: pictures in [0, 1] through the adapter's preprocessing.
        size: (H, W) of the pictures (default: the adapter's input size).
        noise: width of the uniform start noise around mid-grey, as a share of the box.
        jitter, scale, rotate: random shift (px), scale (±share) and rotation (±degrees) at every step.
        tv: weight of the total-variation penalty; blur: σ (px) of a Gaussian blur after every step (pixel).
        seed: seeds the start and the transforms.
        snapshot_every: keep the pictures every k steps (default: about 24 snapshots).
        progress: ``progress(done, total)`` after every step; may raise ``xw.Cancelled`` to stop.
        preview: ``preview(step, pictures, values)`` after every step with the pictures the step evaluated
            (on the device, in [0, 1]) and their objective values, for live drawing.

    Returns:
        MaximizationResult with the final pictures, the objective after every step, the saturation score and
        the snapshots. The model is never changed (also after a cancelled or failed run).
    """
    adapter = _to_adapter(model)
    lr, box = _check_options(steps, lr, optimizer, parameterization, range)
    slope = None if backward_slope is None else check_slope(backward_slope)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(f"n must be a positive int, got {n!r}")
    if blur and parameterization != "pixel":
        raise MethodError(
            "blur acts on pixels: use parameterization='pixel' (Fourier damps high frequencies)"
        )
    for name, value in (("noise", noise), ("jitter", jitter), ("scale", scale), ("rotate", rotate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{name} must be a non-negative number, got {value!r}")
    for name, value in (("tv", tv), ("blur", blur)):
        if not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{name} must be a non-negative number, got {value!r}")
    objective, n = resolve_objective(adapter, target, layer, unit, n)
    channels = adapter.input_size[0]
    height, width = tuple(size) if size is not None else tuple(adapter.input_size[1:])
    every = snapshot_every if snapshot_every is not None else max(1, steps // 24)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(f"snapshot_every must be a positive int, got {snapshot_every!r}")

    device, dtype = adapter.device, adapter.dtype
    generator = torch.Generator().manual_seed(int(seed))
    param_map = Parameterization(parameterization, (n, channels, height, width), device, min(noise, 1.0))
    param = param_map.init(generator, device, dtype)
    lo, hi = box if box is not None else (0.0, 1.0)
    raw_box = parameterization == "pixel" and box is not None
    if raw_box:  # the variable is the model input itself: start, steps and clipping in the box's units
        param = param.mul_(hi - lo).add_(lo)
    param.requires_grad_(True)
    transform = bool(jitter or scale or rotate)

    def evaluate(run: Callable[[Tensor], Tensor], training: bool) -> tuple[Tensor, Tensor]:
        """The pictures in [0, 1] of the current variable and their objective values."""
        if raw_box:
            pictures, x = (param - lo) / (hi - lo), param
        else:
            pictures = param_map.picture(param)
            x = adapter.preprocess(pictures) if box is None else lo + (hi - lo) * pictures
        if transform and training:
            x = random_transform(x, generator, int(jitter), float(scale), float(rotate))
        return pictures, run(x)

    def project() -> None:
        if raw_box:
            param.clamp_(lo, hi)
        else:
            param_map.project(param)

    adam = torch.optim.Adam([param], lr=lr, maximize=True) if optimizer == "adam" else None
    values = torch.empty(steps + 1, n, device=device, dtype=dtype)
    snapshots: list[Tensor] = []
    snapshot_steps: list[int] = []

    def snapshot(step: int, pictures: Tensor) -> None:
        snapshots.append(pictures.detach().mul(255).round().clamp(0, 255).to("cpu", torch.uint8))
        snapshot_steps.append(step)

    slope_rule = adapter.backward_slope(slope) if slope is not None else contextlib.nullcontext()
    with contextlib.ExitStack() as stack:
        stack.enter_context(adapter.evaluating())
        run = stack.enter_context(objective_forward(adapter, objective))
        stack.enter_context(slope_rule)
        stack.enter_context(gradients_enabled())
        for step in _range(steps):
            pictures, score = evaluate(run, True)
            goal = score - tv * total_variation(pictures) if tv else score
            (grad,) = torch.autograd.grad(goal.sum(), param)
            values[step] = score.detach()
            if step % every == 0:
                snapshot(step, pictures)
            if preview is not None:
                preview(step, pictures.detach(), values[step])
            with torch.no_grad():
                if adam is not None:
                    param.grad = grad
                    adam.step()
                    param.grad = None
                elif optimizer == "normalized":
                    rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp(min=1e-12)
                    param.add_(grad / rms.view(-1, *([1] * (grad.ndim - 1))), alpha=lr)
                else:
                    param.add_(grad, alpha=lr)
                if blur:
                    param.copy_(gaussian_blur(param, float(blur)))
                project()
            if progress is not None:
                progress(step + 1, steps)
        with torch.no_grad():
            pictures, values[steps] = evaluate(run, False)
        snapshot(steps, pictures)
    images = pictures.detach().float().cpu()
    sat, white = saturation(images)
    options = {
        "steps": steps,
        "lr": lr,
        "optimizer": optimizer,
        "backward_slope": slope,
        "parameterization": parameterization,
        "range": box,
        "noise": noise,
        "jitter": jitter,
        "scale": scale,
        "rotate": rotate,
        "tv": tv,
        "blur": blur,
        "seed": seed,
    }
    return MaximizationResult(
        images=images,
        activations=values.detach().float().cpu(),
        saturation=sat,
        white=white,
        snapshots=torch.stack(snapshots),
        snapshot_steps=snapshot_steps,
        objective=objective.description,
        options=options,
    )


# ----------------------------------------------------------------------------------- dataset examples
@dataclass
class DatasetExamples:
    """The pictures of a set that drive an objective the most, strongest first.

    Attributes:
        images: k×C×H×W pictures in [0, 1]; values: their objective values; indices: their places in the set.
        boxes: k×4 (top, left, bottom, right) receptive field of the strongest unit (conv channel) or of the
            chosen unit, in pixels, bottom/right exclusive; None for a class or a flat layer.
        crops: the pictures cut to their boxes (the whole pictures without boxes).
    """

    images: Tensor
    values: Tensor
    indices: Tensor
    boxes: Tensor | None
    crops: list[Tensor]


def default_examples(adapter: ModelAdapter, count: int = 256) -> Tensor:
    """The shapes data (seed 0) at the adapter's input size and channel count: the default example set."""
    from .data.shapes import make_shapes

    c, h, w = adapter.input_size
    pictures = make_shapes(count, size=max(h, w, 16), seed=0).images[:, :, :h, :w]
    return pictures.mean(1, keepdim=True).expand(-1, c, -1, -1) if c != 3 else pictures


def dataset_examples(
    model: nn.Module | ModelAdapter | str,
    target: int | None = None,
    layer: str | nn.Module | None = None,
    unit: int | Sequence[int] | None = None,
    *,
    images: Tensor | None = None,
    k: int = 6,
    batch_size: int = 64,
    progress: Progress = None,
) -> DatasetExamples:
    """The ``k`` pictures of ``images`` (N×C×H×W in [0, 1]; default: 256 shapes) that drive the objective of
    :func:`maximize` the most, with the receptive field of the unit that responds.

    The receptive field is the bounding box of the pixels the unit depends on: the input gradient of that
    unit taken with backward slope 1, so no inactive ReLU hides a pixel (max-pooling routes through the
    picture's own maxima, which makes this the picture's effective field).
    """
    adapter = _to_adapter(model)
    if isinstance(target, Sequence):
        raise TargetError("dataset examples take one class (target=int)")
    objective, _ = resolve_objective(adapter, target, layer, unit, 1)
    pictures = default_examples(adapter) if images is None else images
    if not isinstance(pictures, Tensor) or pictures.ndim != 4 or not pictures.is_floating_point():
        raise InputError("images must be an N×C×H×W float tensor of pictures in [0, 1]")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive int, got {k!r}")
    k = min(k, pictures.shape[0])
    values = []
    with adapter.evaluating(), objective_forward(adapter, objective) as run, torch.no_grad():
        total = pictures.shape[0]
        for start in _range(0, total, batch_size):
            batch = adapter.preprocess(pictures[start : start + batch_size])
            values.append(run(batch).float().cpu())
            if progress is not None:
                progress(min(start + batch_size, total), total)
    values_all = torch.cat(values)
    top = values_all.topk(k).indices
    chosen = pictures[top].float().cpu()
    boxes = None
    spatial = objective.layer is not None and objective.layer.spatial
    if spatial:
        boxes = _receptive_fields(adapter, objective, chosen)
    crops = [
        chosen[i] if boxes is None else chosen[i, :, boxes[i, 0] : boxes[i, 2], boxes[i, 1] : boxes[i, 3]]
        for i in _range(k)
    ]
    return DatasetExamples(chosen, values_all[top], top, boxes, crops)


def _receptive_fields(adapter: ModelAdapter, objective: Objective, pictures: Tensor) -> Tensor:
    """k×4 boxes: where the responding unit of each picture takes its input from."""
    x = adapter.preprocess(pictures).requires_grad_(True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(adapter.evaluating())
        run = stack.enter_context(objective_forward(adapter, objective))
        stack.enter_context(adapter.backward_slope(1.0))
        stack.enter_context(gradients_enabled())
        out = run(x, raw=True)
        rows = torch.arange(out.shape[0], device=out.device)
        if objective.channel is not None:
            maps = out[:, objective.channel].detach().flatten(1)
            flat = maps.argmax(1)
            ys, xs = flat // out.shape[3], flat % out.shape[3]
            units = out[rows, objective.channel, ys, xs]
        else:
            units = out[(slice(None), *objective.index)]
        (grad,) = torch.autograd.grad(units.sum(), x)
    support = grad.detach().abs().sum(1).cpu() > 0
    h, w = support.shape[1:]
    boxes = torch.tensor([[0, 0, h, w]]).repeat(len(support), 1)
    for i, mask in enumerate(support):
        rows_on, cols_on = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if rows_on.numel():
            boxes[i] = torch.stack([rows_on[0], cols_on[0], rows_on[-1] + 1, cols_on[-1] + 1])
    return boxes


# ------------------------------------------------------------------------------------- a toy problem
class RaceOfPatterns(nn.Module):
    """A synthetic function that shows the white image (Linse et al. 2024's "race of patterns").

    Logit k = φ(a·x + 1) + φ(p_k·x − D/4) on inputs x ∈ [−1, 1]^D (D = C·H·W), φ = Leaky ReLU (slope 0.01):
    a = 0.05·(1, …, 1) detects brightness and is active at a grey start; p_k is a ±1 pattern with as many +1 as
    −1, inactive at the start and at the white image (p_k·1 = 0). The maximum sits at the pattern, x = sign(p_k)
    (logit ≈ 1 + 3D/4), but the forward gradient there is a + 0.01·p_k > 0: every pixel brightens, and plain
    ascent ends at the white image (logit 0.05·D + 1 − 0.01·D/4) whatever the optimiser. A backward slope β with
    β > 0.05 makes the pattern pixels darken from the start.
    """

    def __init__(self, classes: int = 4, size: int = 8, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        dim = channels * size * size
        signs = torch.stack([torch.randperm(dim, generator=generator) % 2 * 2.0 - 1 for _ in _range(classes)])
        self.flatten = nn.Flatten()
        self.detect = nn.Linear(dim, classes + 1)
        with torch.no_grad():
            self.detect.weight.copy_(torch.cat([torch.full((1, dim), 0.05), signs]))
            self.detect.bias.copy_(torch.cat([torch.ones(1), torch.full((classes,), -dim / 4)]))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.detect(self.flatten(x)))
        return h[:, :1] + h[:, 1:]


def race_of_patterns(classes: int = 4, size: int = 8, channels: int = 3, seed: int = 0) -> ModelAdapter:
    """:class:`RaceOfPatterns` as an adapter; maximise it with ``range=(-1, 1)``, its input box."""
    model = RaceOfPatterns(classes, size, channels, seed).eval()
    return ModelAdapter(model, input_size=(channels, size, size), name="race-of-patterns")
