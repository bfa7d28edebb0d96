"""Attention rollout and gradient rollout: known answers of the maths, equality with a direct re-computation
from attention matrices computed by hand on a tiny ViT, the attention switches restored, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import xai_widgets as xw
from xai_widgets.errors import MethodError, UnsupportedModelError
from xai_widgets.methods.attention import AttentionCapture, gradient_rollout, rollout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modelguard import SmallCNN  # noqa: E402
from tiny_transformers import swin, timm_vit, vit  # noqa: E402


def test_identity_attention_rolls_out_to_the_identity():
    eye = torch.eye(17).expand(2, 3, 17, 17)
    result = rollout([eye, eye])
    assert torch.allclose(result, torch.eye(17).expand(2, 17, 17))
    patches = result[:, 0, 1:]  # the class token attends to no patch: uniform (zero) over patches
    assert torch.equal(patches, torch.zeros_like(patches))


def test_uniform_attention_rolls_out_uniformly_over_patches():
    t = 17
    uniform = torch.full((1, 2, t, t), 1 / t)
    result = rollout([uniform, uniform, uniform])
    patches = result[0, 0, 1:]
    assert torch.allclose(patches, patches[0].expand_as(patches)) and patches[0] > 0
    assert torch.allclose(result.sum(-1), torch.ones(1, t))  # rows stay distributions


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_matches_the_paper_step_by_step(fusion):
    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(2, 3, 5, 5), -1) for _ in range(3)]
    expected = torch.eye(5).expand(2, 5, 5)
    for a in layers:
        fused = {"mean": a.mean(1), "max": a.max(1).values, "min": a.min(1).values}[fusion]
        step = (fused + torch.eye(5)) / 2
        expected = (step / step.sum(-1, keepdim=True)) @ expected
    assert torch.allclose(rollout(layers, fusion), expected, atol=1e-6)


def test_discard_ratio_drops_the_smallest_entries_but_not_the_class_token_self_attention():
    a = torch.tensor([[[[0.05, 0.5, 0.45], [0.2, 0.3, 0.5], [0.6, 0.1, 0.35]]]])
    # a third of the 9 entries (3) dropped: 0.1, 0.2, 0.3; the smaller 0.05 at [0, 0] stays
    result = rollout([a], discard_ratio=1 / 3)
    kept = torch.tensor([[0.05, 0.5, 0.45], [0.0, 0.0, 0.5], [0.6, 0.0, 0.35]])
    step = (kept + torch.eye(3)) / 2
    assert torch.allclose(result[0], step / step.sum(-1, keepdim=True))


def test_gradient_rollout_accumulates_positive_gradient_times_attention():
    a = [torch.full((1, 2, 3, 3), 1 / 3), torch.eye(3).expand(1, 2, 3, 3)]
    g = [torch.ones(1, 2, 3, 3), -torch.ones(1, 2, 3, 3)]
    result = gradient_rollout(a, g)
    first = torch.eye(3) + torch.full((3, 3), 1 / 3) @ torch.eye(3)
    assert torch.allclose(result[0], first)  # the second block's (∇A ⊙ A)⁺ is zero: it adds nothing


def manual_forward(model, x):
    """torchvision ViT forward written out, attention weights explicit and kept (N×H×T×T per block)."""
    h = model._process_input(x)
    h = torch.cat([model.class_token.expand(x.shape[0], -1, -1), h], dim=1) + model.encoder.pos_embedding
    weights = []
    for block in model.encoder.layers:
        attn = block.self_attention
        e, heads = attn.embed_dim, attn.num_heads
        y = block.ln_1(h)
        q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

        def split(t, heads=heads, e=e):
            return t.reshape(t.shape[0], t.shape[1], heads, e // heads).transpose(1, 2)

        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (e // heads) ** 0.5, dim=-1)
        weights.append(a)
        o = (a @ split(v)).transpose(1, 2).reshape(h.shape)
        h = h + F.linear(o, attn.out_proj.weight, attn.out_proj.bias)
        h = h + block.mlp(block.ln_2(h))
    return model.heads(model.encoder.ln(h)[:, 0]), weights


def test_methods_equal_a_direct_recomputation_on_a_tiny_vit(guard):
    model = vit()
    x = torch.randn(2, 3, 32, 32)
    target = torch.tensor([1, 3])
    logits, weights = manual_forward(model, x)
    assert torch.allclose(logits, model(x), atol=1e-5)
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), weights)
    expected_rollout = torch.eye(17)
    for a in weights:
        step = (a.mean(1) + torch.eye(17)) / 2
        expected_rollout = (step / step.sum(-1, keepdim=True)) @ expected_rollout
    expected_gradient = torch.eye(17)
    for a, g in zip(weights, grads):
        expected_gradient = expected_gradient + (a * g).clamp_min(0).mean(1) @ expected_gradient
    with guard(model):
        plain = xw.explain(model, x, target, "attention_rollout")
        weighted = xw.explain(model, x, target, "gradient_rollout")
    assert plain.layer_map.shape == (2, 4, 4) and plain.attribution.shape == (2, 32, 32)
    assert torch.allclose(plain.layer_map, expected_rollout[:, 0, 1:].reshape(2, 4, 4).detach(), atol=1e-5)
    assert torch.allclose(
        weighted.layer_map, expected_gradient[:, 0, 1:].reshape(2, 4, 4).detach(), atol=1e-5
    )
    assert weighted.extras.get("degenerate") is None and plain.extras.get("degenerate") is None


def test_capture_switches_timm_to_explicit_attention_and_restores_it_after_an_error(guard):
    model = timm_vit(reg_tokens=2)
    assert all(block.attn.fused_attn for block in model.blocks)

    def fail(module, inputs, output):
        raise RuntimeError("boom")

    x = torch.randn(1, 3, 32, 32)
    with guard(model):
        with AttentionCapture(model) as capture:
            model(x)
            assert not any(block.attn.fused_attn for block in model.blocks)
        assert [tuple(r.weights.shape) for r in capture.records] == [(1, 2, 19, 19)] * 2
        handle = model.head.register_forward_hook(fail)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                xw.explain(model, x, 0, "gradient_rollout")
        finally:
            handle.remove()
    assert all(block.attn.fused_attn for block in model.blocks)


def test_timm_gradient_rollout_uses_the_class_token_row_past_register_tokens(guard):
    model = timm_vit(reg_tokens=2)
    x = torch.randn(2, 3, 32, 32)
    with guard(model):
        e = xw.explain(model, x, [0, 4], "gradient_rollout")
    with AttentionCapture(model) as capture:
        logits = model(x)
    grads = capture.gradients(logits.gather(1, torch.tensor([[0], [4]])).squeeze(1))
    relevance = gradient_rollout([r.weights.detach() for r in capture.records], grads)
    # class token first, then 2 register tokens, then the 4×4 patches
    assert torch.allclose(e.layer_map, relevance[:, 0, 3:].reshape(2, 4, 4), atol=1e-6)


def test_a_cnn_and_windowed_attention_raise_clear_errors(guard):
    cnn = SmallCNN().eval()
    with guard(cnn), pytest.raises(UnsupportedModelError, match="no self-attention"):
        xw.explain(cnn, torch.randn(1, 3, 32, 32), method="attention_rollout")
    model = swin()
    with guard(model), pytest.raises(UnsupportedModelError, match="ShiftedWindowAttention"):
        xw.explain(model, torch.randn(1, 3, 32, 32), method="gradient_rollout")


def test_bad_options_raise_method_errors():
    model = vit()
    with pytest.raises(MethodError, match="head_fusion"):
        xw.explain(model, torch.randn(1, 3, 32, 32), method="attention_rollout", head_fusion="median")
    with pytest.raises(MethodError, match="discard_ratio"):
        xw.explain(model, torch.randn(1, 3, 32, 32), method="attention_rollout", discard_ratio=1.0)
    assert xw.get_method("gradient_rollout").family == "attention"
