"""Token layouts: how a layer's output is read as an N×C×h×w map, for convnets and transformers alike.

Every spatial method (the CAM family, CAManim, Score-/Ablation-CAM) works on N×C×h×w maps. Modern models
produce other layouts, and reading them as C×H×W gives wrong maps without a word:

* **tokens** N×(p + h·w)×C: torchvision ViT blocks (p = 1, the class token first), timm ViT/DeiT/DINOv2-style
  models (p = ``num_prefix_tokens``: class, distillation and register tokens); the patch grid comes from the
  model (image size ÷ patch size, timm's ``patch_embed``) or, for other attention models, from the input size;
* **channels last** N×h×w×C: torchvision Swin blocks, the LayerNorm/Linear/GELU layers inside ConvNeXt
  blocks (torchvision permutes inside ``CNBlock``), timm ConvNeXt's MLPs;
* **channels first** N×C×h×w: convolutions and everything that keeps their layout.

The layout of each layer is inferred once, in the catalogue's dummy forward, from what produced it (a
convolution, a Linear or LayerNorm on the last axis, a ``Permute``) and what it was computed from (a module
whose output has its input's shape keeps its input's layout: activations, residual blocks, attention), so
pytorch-grad-cam's hand-written ``reshape_transform`` is not needed. Outputs that are no picture (MaxViT's
window partitions, attention weights) get no layout. A user can still give ``reshape_transform`` to the
adapter for an exotic model; it then reads every output that is not channels-first.

:meth:`Layout.to_map` applies to activations and gradients alike: it only selects and rearranges, so the
gradient of the map is the map of the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from .errors import LayerError

KINDS = ("channels_first", "channels_last", "tokens", "custom", "none")

_CONV = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass(frozen=True)
class Layout:
    """How one layer's output (without the batch axis, ``out_shape``) maps to C×h×w.

    ``kind`` is one of ``channels_first`` (C×h×w as is), ``channels_last`` (h×w×C), ``tokens`` (``prefix``
    leading tokens, then the h×w patch grid in row-major order, C channels) or ``custom`` (the user's
    ``transform``); ``none`` marks an output that is no map (:data:`NO_MAP`).
    """

    kind: str
    channels: int
    grid: tuple[int, int]
    prefix: int = 0
    transform: Callable[[Tensor], Tensor] | None = field(default=None, compare=False, repr=False)

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """C×h×w of the map (None for ``none``)."""
        return None if self.kind == "none" else (self.channels, *self.grid)

    def to_map(self, output: Tensor) -> Tensor:
        """The N×C×h×w map of a batch of this layer's outputs (activations or their gradients)."""
        if self.kind == "none":
            raise LayerError("this layer's output is no spatial map")
        if self.kind == "channels_first":
            return output
        if self.kind == "channels_last":
            return output.permute(0, 3, 1, 2)
        if self.kind == "custom":
            result = self.transform(output)
            if not isinstance(result, Tensor) or result.ndim != 4:
                raise LayerError(
                    "reshape_transform must return an N×C×h×w tensor, got "
                    f"{tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__}"
                )
            return result
        h, w = self.grid
        if output.ndim != 3 or output.shape[1] != self.prefix + h * w:
            raise LayerError(
                f"expected {self.prefix} prefix tokens and a {h}×{w} patch grid ({self.prefix + h * w} tokens), "
                f"got an output of shape {tuple(output.shape)}; explain images of the catalogue's input size or "
                "give the adapter a reshape_transform"
            )
        return output[:, self.prefix :].reshape(output.shape[0], h, w, output.shape[2]).permute(0, 3, 1, 2)

    def describe(self) -> str:
        """A short description for menus and error messages."""
        h, w = self.grid
        if self.kind == "tokens":
            prefix = f"{self.prefix} prefix + " if self.prefix else ""
            return f"tokens ({prefix}{h}×{w} patches) × {self.channels}"
        if self.kind == "channels_last":
            return f"{h}×{w}×{self.channels} (channels last)"
        return f"{self.channels}×{h}×{w}"


NO_MAP = Layout("none", 0, (0, 0))
"""The layout of an output that is no map (attention weights, window partitions, vectors)."""


@dataclass(frozen=True)
class TokenGrid:
    """The token layout of a transformer: ``prefix`` leading tokens, then an h×w patch grid."""

    prefix: int
    grid: tuple[int, int]


def token_grid(model: nn.Module, input_size: Sequence[int]) -> TokenGrid | None:
    """The token grid of ``model`` at ``input_size`` (C, H, W), or None for a model without token sequences.

    torchvision ``VisionTransformer``: one class token, grid = image size ÷ patch size. timm ViT/DeiT/DINOv2
    style (``num_prefix_tokens`` and a ``patch_embed``): its prefix tokens and patch grid (dynamic image
    sizes included). Another model with self-attention: no prefix tokens known; see :func:`guess_grid`.
    """
    if len(input_size) != 3:  # feature vectors (N×D): no patch grid
        return None
    _, height, width = input_size
    patch = getattr(model, "patch_size", None)
    if isinstance(getattr(model, "class_token", None), nn.Parameter) and isinstance(patch, int):
        return TokenGrid(1, (height // patch, width // patch))
    embed = getattr(model, "patch_embed", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, int) and embed is not None:
        size = getattr(embed, "patch_size", None)
        if isinstance(size, int):
            size = (size, size)
        if size is not None and len(size) == 2:
            return TokenGrid(prefix, (height // size[0], width // size[1]))
        grid = getattr(embed, "grid_size", None)
        if grid is not None:
            return TokenGrid(prefix, tuple(grid))
    return None


def has_attention(model: nn.Module) -> bool:
    """True when ``model`` holds a self-attention module (see :func:`is_attention`)."""
    return any(is_attention(m) for m in model.modules())


def guess_grid(tokens: int, height: int, width: int, max_prefix: int = 8) -> TokenGrid | None:
    """The fewest prefix tokens p (0..``max_prefix``) leaving an h×w grid with the input's aspect ratio."""
    for prefix in range(min(max_prefix, tokens - 1) + 1):
        count = tokens - prefix
        for h in range(1, count + 1):
            if (
                count % h == 0
                and _plausible(h, count // h, height, width)
                and h * width == (count // h) * height
            ):
                return TokenGrid(prefix, (h, count // h))
    return None


def _plausible(h: int, w: int, height: int, width: int) -> bool:
    """An h×w grid can be a downsampled H×W picture: not larger, and (up to rounding) the same aspect ratio."""
    if h < 1 or w < 1 or h > height or w > width:
        return False
    return abs(h * width - w * height) <= max(width, height) + max(h, w) * max(width, height) // 8


def _plain_layer_norm_axis(module: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Where a LayerNorm normalises a 4-D output: ``last`` (nn.LayerNorm, timm's LayerNorm), ``first``
    (LayerNorm2d variants that permute inside), or None when it cannot tell."""
    channels = tuple(module.normalized_shape)
    if len(channels) != 1:
        return None
    if type(module).forward is nn.LayerNorm.forward:
        return "last" if shape[-1] == channels[0] else None
    if shape[-1] == channels[0] and shape[1] != channels[0]:
        return "last"
    if shape[1] == channels[0] and shape[-1] != channels[0]:
        return "first"
    if shape[1] == shape[-1] == channels[0]:
        return "first" if "2d" in type(module).__name__.lower() else "last"
    return None


class LayoutTracker:
    """Infers layouts during one forward: :meth:`record` is called from every module's forward hook in the
    order they finish (children before parents); :attr:`layouts` holds the result per call."""

    def __init__(
        self, model: nn.Module, input_size: Sequence[int], reshape_transform: Callable | None
    ) -> None:
        self.size = tuple(input_size)
        self.tokens = token_grid(model, input_size)
        self.guess = self.tokens is None and has_attention(model)
        self.transform = reshape_transform
        self.by_tensor: dict[int, Layout | None] = {}
        self.keep: list[Any] = []  # keeps recorded tensors alive so their ids stay unique
        self.layouts: list[Layout | None] = []

    def record(self, module: nn.Module, inputs: tuple, output: Any) -> Layout | None:
        """The layout of ``module``'s ``output``; remembered for the modules that read it."""
        layout = self._infer(module, inputs, output) if isinstance(output, Tensor) else None
        if layout is not None and layout.kind != "channels_first" and self.transform is not None:
            layout = self._custom(output) or layout
        elif layout is None and isinstance(output, Tensor) and self.transform is not None:
            layout = self._custom(output)
        if isinstance(output, Tensor):
            self.by_tensor[id(output)] = layout
            self.keep.append(output)
        self.layouts.append(layout)
        return layout

    def _custom(self, output: Tensor) -> Layout | None:
        try:
            result = self.transform(output)
        except Exception:  # noqa: BLE001 - a user transform that does not fit this layer: no map here
            return None
        if not isinstance(result, Tensor) or result.ndim != 4 or result.shape[0] != output.shape[0]:
            return None
        return Layout("custom", result.shape[1], tuple(result.shape[2:]), transform=self.transform)

    def _infer(self, module: nn.Module, inputs: tuple, output: Tensor) -> Layout | None:
        if len(self.size) != 3:  # a model of feature vectors: no spatial layouts
            return None
        _, height, width = self.size
        shape = tuple(output.shape)
        source = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        known = id(output) in self.by_tensor  # the same tensor as a child's output (a Sequential's last)
        if len(shape) == 3:
            return self._tokens(shape, height, width)
        if len(shape) != 4:
            return None
        first = Layout("channels_first", shape[1], shape[2:])
        last = Layout("channels_last", shape[3], shape[1:3])
        if isinstance(module, _CONV):
            return first
        axis = None
        if isinstance(module, nn.Linear):
            axis = "last"
        elif isinstance(module, nn.LayerNorm):
            axis = _plain_layer_norm_axis(module, shape)
        elif type(module).__name__ == "Permute" and list(getattr(module, "dims", [])) in (
            [0, 2, 3, 1],
            [0, 3, 1, 2],
        ):
            axis = "last" if list(module.dims) == [0, 2, 3, 1] else "first"
        if axis == "last":
            return last if _plausible(shape[1], shape[2], height, width) else None
        if axis == "first":
            return first
        if known:
            return self.by_tensor[id(output)]
        if source is not None and id(source) in self.by_tensor:
            upstream = self.by_tensor[id(source)]
            if tuple(source.shape) == shape:
                return upstream
            if upstream is not None and upstream.kind == "channels_last":
                return last if _plausible(shape[1], shape[2], height, width) else None
            if (
                upstream is not None
                and source.numel() == output.numel()
                and not _plausible(shape[2], shape[3], height, width)
            ):
                return None  # a rearrangement of a map that is no map (MaxViT's window partitions)
        if self.tokens is not None or self.guess:  # inside attention: heads × tokens × tokens/dims are no map
            count = (
                None
                if self.tokens is None
                else self.tokens.prefix + self.tokens.grid[0] * self.tokens.grid[1]
            )
            if not _plausible(shape[2], shape[3], height, width) or count in (shape[2], shape[3]):
                return None
        return first

    def _tokens(self, shape: tuple[int, ...], height: int, width: int) -> Layout | None:
        tokens, channels = shape[1], shape[2]
        grid = self.tokens
        if grid is None and self.guess:
            grid = guess_grid(tokens, height, width)
        if grid is not None and tokens in (
            grid.prefix + grid.grid[0] * grid.grid[1],
            grid.grid[0] * grid.grid[1],
        ):
            return Layout("tokens", channels, grid.grid, tokens - grid.grid[0] * grid.grid[1])
        return None


def is_attention(module: nn.Module) -> bool:
    """A self-attention module: torchvision ``MultiheadAttention``, one with timm's ``fused_attn`` switch, or
    one with "Attention" in its class name (Swin's window attention, MaxViT's relative attention)."""
    return (
        isinstance(module, nn.MultiheadAttention)
        or hasattr(module, "fused_attn")
        or "Attention" in type(module).__name__
    )


def transformer_cam_layer(catalogue: Sequence[Any]) -> Any | None:
    """The default CAM layer of a token transformer, from the catalogue alone: the first norm of the last
    block that has an attention module as a direct child and token outputs (None for other models).

    That norm reads the last block's input, whose patch tokens reach the class token through the block's
    attention; the patch tokens after the last block reach no logit when the head reads only the class token
    (an all-zero gradient), so the usual choice (pytorch-grad-cam's ViT example, Chefer et al.) is this norm.
    """
    blocks = [
        entry
        for entry in catalogue
        if entry.kind == "block"
        and entry.layout is not None
        and entry.layout.kind == "tokens"
        and any(is_attention(child) for child in entry.module.children())
    ]
    if not blocks:
        return None
    last = blocks[-1]
    for entry in catalogue:
        if entry.name.startswith(last.name + ".") and entry.kind == "norm" and entry.spatial:
            return entry
    return last
