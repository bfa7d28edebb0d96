"""Attention family: maps read from a vision transformer's attention weights.

* **Attention rollout** (Abnar and Zuidema 2020): per block, the heads' attention A_l (N×H×T×T) is fused
  (mean, max or min over heads), optionally its smallest entries are discarded, the residual connection is
  added as Ã_l = ½A_l + ½I and the rows are renormalised; the rollout is Ã_L ··· Ã_1, read at the class
  token's row (the mean row for a model without class token), patch columns, on the patch grid.
* **Gradient rollout** (Chefer, Gur and Wolf, ICCV 2021, arXiv 2103.15679, eq. 5–6): R = I, then for each
  block R ← R + E_h[(∇A ⊙ A)⁺] · R, with ∇A the gradient of the target score by the attention weights;
  read like the rollout.

Capturing the weights must not change the model. torchvision's ``EncoderBlock`` calls ``MultiheadAttention``
with ``need_weights=False`` and timm's ``Attention`` runs fused scaled-dot-product attention, so
:class:`AttentionCapture` switches both temporarily (a forward pre-hook that asks torchvision for the per-head
weights, ``fused_attn = False`` on timm modules so the weights pass ``attn_drop``, where a hook reads them) and
restores everything in ``finally``. The explicit path computes the same attention in a different order of
floating-point operations (logits differ by rounding only).

The gradient of torchvision's weights is not in the autograd graph (they are returned beside the output, not
used by it), but it follows exactly from the output's gradient: O_h = A_h V_h, so ∇A_h = ∇O_h V_hᵀ with ∇O the
output gradient times the output projection and V the value projection of the module's input.

:class:`AttentionCapture` is reusable by rules that need the explicit attention path (AttnLRP): inside it timm
computes ``q @ kᵀ``, ``softmax`` and ``attn @ v`` as separate operations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MethodError, UnsupportedModelError
from ..explanation import Explanation
from ..layouts import guess_grid, is_attention, token_grid
from ..model import ModelAdapter
from ..registry import register_method

HEAD_FUSIONS = ("mean", "max", "min")


@dataclass
class AttentionRecord:
    """The attention weights of one call of one attention module: ``weights`` is N×H×T×T (rows: queries)."""

    name: str
    module: nn.Module = field(repr=False)
    weights: Tensor = field(repr=False)
    source: Tensor = field(repr=False)  # the tensor whose gradient gives ∇A (the weights, or the MHA output)
    value: Tensor | None = field(default=None, repr=False)  # torchvision: V per head, N×H×T×d
    out_weight: Tensor | None = field(default=None, repr=False)  # torchvision: the output projection


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The self-attention modules of ``model`` whose weights can be captured (torchvision
    ``MultiheadAttention``; timm-style modules with ``fused_attn`` and ``attn_drop``), in definition order.

    Raises UnsupportedModelError naming the attention modules found that are of another kind (Swin's window
    attention, MaxViT's partitioned attention), or saying that the model has none (a convnet).
    """
    found, other = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) or (
            hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)
        ):
            if not any(name.startswith(seen + ".") for seen, _ in found):
                found.append((name, module))
        elif is_attention(module) and not any(name.startswith(seen + ".") for seen, _ in found + other):
            other.append((name, module))
    if other:
        names = ", ".join(f"{type(m).__name__} ({n!r})" for n, m in other[:3])
        raise UnsupportedModelError(
            f"rollout needs global self-attention over one token sequence (torchvision MultiheadAttention, timm "
            f"Attention); this model has {names}, whose windowed or partitioned attention has no token-to-token "
            "matrix over the whole image; use a CAM method"
        )
    if not found:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no self-attention module (torchvision MultiheadAttention or timm "
            "Attention), so it has no attention to roll out; use a CAM or gradient method"
        )
    return found


class AttentionCapture(contextlib.AbstractContextManager):
    """Within the block, every forward records the attention weights of each attention module (in call
    order, in :attr:`records`); :meth:`gradients` gives ∇A for a score of that forward.

    The modules are switched to their explicit attention path while the block runs (torchvision
    ``need_weights=True, average_attn_weights=False``; timm ``fused_attn = False``) and restored on exit, also
    after an error. Hooks are removed on exit.

    Example:
        >>> import torch, torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=3).eval()
        >>> with AttentionCapture(vit) as capture:
        ...     _ = vit(torch.randn(1, 3, 32, 32))
        >>> [tuple(r.weights.shape) for r in capture.records]
        [(1, 2, 17, 17), (1, 2, 17, 17)]
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = attention_modules(model)
        self.records: list[AttentionRecord] = []
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> AttentionCapture:
        self.records = []
        stack = contextlib.ExitStack()
        try:
            for name, module in self.modules:
                if isinstance(module, nn.MultiheadAttention):
                    stack.enter_context(self._torchvision(name, module))
                else:
                    stack.enter_context(self._timm(name, module))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @contextlib.contextmanager
    def _timm(self, name: str, module: nn.Module):
        fused = module.fused_attn

        def keep(drop: nn.Module, inputs: tuple, output: Tensor) -> None:
            self.records.append(AttentionRecord(name, module, output, output))

        handle = module.attn_drop.register_forward_hook(keep)
        try:
            module.fused_attn = False
            yield
        finally:
            module.fused_attn = fused
            handle.remove()

    @contextlib.contextmanager
    def _torchvision(self, name: str, module: nn.MultiheadAttention):
        def ask(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

        def keep(mod: nn.MultiheadAttention, args: tuple, kwargs: dict, output: tuple) -> None:
            value = args[2] if len(args) > 2 else kwargs["value"]
            out, weights = output[0], output[1]
            if not mod.batch_first and value.ndim == 3:
                value = value.transpose(0, 1)
            e, heads = mod.embed_dim, mod.num_heads
            if mod._qkv_same_embed_dim:
                w_v = mod.in_proj_weight[2 * e :]
            else:
                w_v = mod.v_proj_weight
            b_v = None if mod.in_proj_bias is None else mod.in_proj_bias[2 * e :]
            v = F.linear(value.detach(), w_v.detach(), None if b_v is None else b_v.detach())
            n, t = v.shape[:2]
            v = v.reshape(n, t, heads, e // heads).transpose(1, 2)
            record = AttentionRecord(name, mod, weights, out, v, mod.out_proj.weight.detach())
            self.records.append(record)

        handles = [
            module.register_forward_pre_hook(ask, with_kwargs=True),
            module.register_forward_hook(keep, with_kwargs=True),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def gradients(self, score: Tensor, retain_graph: bool = False) -> list[Tensor]:
        """∇A of ``score.sum()`` for every record (N×H×T×T each, zeros where the score does not depend on A)."""
        if not self.records:
            raise UnsupportedModelError("no attention weights were recorded: run the model inside the block")
        sources = [record.source for record in self.records]
        grads = torch.autograd.grad(score.sum(), sources, allow_unused=True, retain_graph=retain_graph)
        result = []
        for record, grad in zip(self.records, grads):
            if grad is None:
                result.append(torch.zeros_like(record.weights))
                continue
            if record.value is None:
                result.append(grad)
                continue
            module = record.module
            if not module.batch_first and grad.ndim == 3:
                grad = grad.transpose(0, 1)
            n, t, e = grad.shape
            heads = module.num_heads
            grad_out = (grad @ record.out_weight).reshape(n, t, heads, e // heads).transpose(1, 2)
            result.append(grad_out @ record.value.transpose(-1, -2))
        return result


# ------------------------------------------------------------------------------------------- the maths
def _fuse(weights: Tensor, head_fusion: str) -> Tensor:
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    return weights.amin(dim=1)


def rollout(attentions: Sequence[Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """Attention rollout (Abnar and Zuidema 2020) of per-block weights (each N×H×T×T): Ã_L ··· Ã_1 (N×T×T).

    Ã_l = ½ fuse(A_l) + ½ I with rows renormalised; ``discard_ratio`` of the smallest fused entries of each
    block (per sample) are set to zero first, never the first token's attention to itself (as in Gildenblat's
    reference implementation, so the class token's row never vanishes).
    """
    _check_options(head_fusion, discard_ratio)
    result = None
    for weights in attentions:
        fused = _fuse(weights.float(), head_fusion)
        n, t, _ = fused.shape
        if discard_ratio > 0:
            flat = fused.reshape(n, t * t)
            count = int(t * t * discard_ratio)
            ranked = flat.clone()
            ranked[:, 0] = torch.inf
            drop = ranked.topk(count, dim=1, largest=False).indices
            fused = flat.scatter(1, drop, 0.0).reshape(n, t, t)
        eye = torch.eye(t, device=fused.device, dtype=fused.dtype)
        step = 0.5 * fused + 0.5 * eye
        step = step / step.sum(dim=-1, keepdim=True)
        result = step if result is None else step @ result
    if result is None:
        raise UnsupportedModelError("rollout needs the attention weights of at least one block")
    return result


def gradient_rollout(attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """Gradient-weighted rollout (Chefer et al. 2021, eq. 5–6): R = I, R ← R + E_h[(∇A ⊙ A)⁺] · R (N×T×T)."""
    result = None
    for weights, grads in zip(attentions, gradients, strict=True):
        cam = (grads.float() * weights.float()).clamp_min(0).mean(dim=1)
        if result is None:
            n, t, _ = cam.shape
            result = torch.eye(t, device=cam.device, dtype=cam.dtype).expand(n, t, t)
        result = result + cam @ result
    if result is None:
        raise UnsupportedModelError("gradient rollout needs the attention weights of at least one block")
    return result


def _check_options(head_fusion: str, discard_ratio: float) -> None:
    if head_fusion not in HEAD_FUSIONS:
        raise MethodError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    if (
        isinstance(discard_ratio, bool)
        or not isinstance(discard_ratio, (int, float))
        or not 0 <= discard_ratio < 1
    ):
        raise MethodError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")


def patch_map(relevance: Tensor, adapter: ModelAdapter, x: Tensor) -> Tensor:
    """The class token's row of an N×T×T token relevance (the mean row without class token), on the patch
    grid: N×h×w."""
    tokens = relevance.shape[-1]
    grid = token_grid(adapter.model, x.shape[1:])
    if grid is None or grid.prefix + grid.grid[0] * grid.grid[1] != tokens:
        grid = guess_grid(tokens, x.shape[-2], x.shape[-1])
    if grid is None:
        raise UnsupportedModelError(
            f"{adapter.name}'s attention runs over {tokens} tokens, which is no patch grid of a "
            f"{x.shape[-2]}×{x.shape[-1]} image (with up to 8 class/register tokens)"
        )
    row = relevance[:, 0] if grid.prefix else relevance.mean(dim=1)
    return row[:, grid.prefix :].reshape(-1, *grid.grid)


def _explanation(
    x: Tensor, target, method: str, layer_map: Tensor, score: Tensor, options: dict
) -> Explanation:
    layer_map = layer_map.detach().to(x.dtype)
    attribution = F.interpolate(
        layer_map.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False
    )
    return Explanation(
        attribution=attribution.squeeze(1),
        method=method,
        target=target if isinstance(target, Tensor) else None,
        score=score.detach(),
        layer_map=layer_map,
        options=options,
    )


def _run(adapter: ModelAdapter, x: Tensor, target, grads: bool) -> tuple[AttentionCapture, Tensor, Any]:
    capture = AttentionCapture(adapter.model)
    with capture, adapter.evaluating(), torch.set_grad_enabled(grads):
        if grads:  # the attention gets a graph also when every parameter is frozen
            x = x.detach().clone().requires_grad_(True)
        logits = adapter.forward(x)
        if not callable(target) or isinstance(target, Tensor):
            target = adapter.resolve_target(target, logits=logits)
        score = adapter.score(logits, target)
    return capture, score, target


@register_method("attention_rollout", family="attention", cost="cheap", signed=False)
def attention_rollout(
    adapter: ModelAdapter, x: Tensor, target, head_fusion: str = "mean", discard_ratio: float = 0.0
) -> Explanation:
    """Attention rollout (Abnar and Zuidema 2020): the product over blocks of ½A + ½I (heads fused by
    ``head_fusion``, the ``discard_ratio`` smallest entries dropped), class-token row, on the patch grid.
    Class-agnostic: the target only sets the reported score."""
    _check_options(head_fusion, discard_ratio)
    capture, score, target = _run(adapter, x, target, grads=False)
    relevance = rollout([r.weights for r in capture.records], head_fusion, discard_ratio)
    options = {"head_fusion": head_fusion, "discard_ratio": discard_ratio}
    return _explanation(x, target, "attention_rollout", patch_map(relevance, adapter, x), score, options)


@register_method("gradient_rollout", family="attention", cost="cheap", signed=False)
def gradient_rollout_method(adapter: ModelAdapter, x: Tensor, target) -> Explanation:
    """Gradient-weighted attention rollout (Chefer et al., ICCV 2021): R ← R + E_h[(∇A ⊙ A)⁺] · R over the
    blocks, class-token row, on the patch grid; one forward and one backward."""
    capture, score, target = _run(adapter, x, target, grads=True)
    weights = [r.weights.detach() for r in capture.records]
    relevance = gradient_rollout(weights, capture.gradients(score))
    return _explanation(x, target, "gradient_rollout", patch_map(relevance, adapter, x), score, {})
