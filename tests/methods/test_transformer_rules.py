"""xai_widgets.methods.transformer_rules: LRP through attention, LayerNorm, gates and layer scales.

Known answers: a bias-free attention network and a squeeze-excitation network conserve relevance; the CP rule
sends nothing through queries and keys; the bilinear and softmax rules follow AttnLRP's formulas; timm's fused
and explicit attention give the same map; tiny torchvision ViT and Swin run with the model unchanged.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_widgets as xw
from xai_widgets.methods.transformer_rules import TransformerRules, _Bilinear, _Softmax


class TinyAttentionNet(nn.Module):
    """Bias-free: patch embedding, LayerNorm, self-attention (torch MHA), residual, GELU MLP, mean, head."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4, bias=False)
        self.norm = nn.LayerNorm(dim, bias=False)
        self.attn = nn.MultiheadAttention(dim, 2, bias=False, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim, bias=False), nn.GELU(), nn.Linear(2 * dim, dim, bias=False)
        )
        self.head = nn.Linear(dim, 3, bias=False)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        y = self.norm(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(x)
        return self.head(x.mean(1))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.squeeze = nn.Conv2d(8, 8, 1)
        self.scale = nn.Parameter(torch.full((1, 8, 1, 1), 0.5))
        self.fc = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        x = F.relu(self.conv(x))
        gate = torch.sigmoid(self.squeeze(F.adaptive_avg_pool2d(x, 1)))
        x = (x * gate) * self.scale  # an SE gate, then a layer scale
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("model_class", [TinyAttentionNet, SqueezeExcite])
def test_bias_free_networks_conserve_relevance(model_class, guard):
    torch.manual_seed(0)
    model = model_class().eval()
    x = torch.randn(2, 3, 16, 16)
    with guard(model):
        e = xw.explain(model, x, [0, 2], "lrp_epsilon", epsilon=0.0)
    torch.testing.assert_close(e.pixel.flatten(1).sum(1), e.score, rtol=1e-4, atol=1e-6)
    assert e.pixel.abs().sum() > 0


def test_cp_rule_sends_nothing_through_queries_and_keys():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 3, requires_grad=True) for _ in range(3))
    rules = TransformerRules(
        0.0, "cp", lambda t: isinstance(t, torch.Tensor) and t.requires_grad, None, "lrp"
    )
    attention = rules.softmax(rules.matmul(q, k.transpose(-2, -1), "qk"), -1)
    out = rules.matmul(attention, v, "av")
    relevance = torch.rand_like(out)
    rq, rk, rv = torch.autograd.grad(out, (q, k, v), relevance, allow_unused=True, materialize_grads=True)
    assert rq.abs().sum() == 0 and rk.abs().sum() == 0
    torch.testing.assert_close(rv, v * (attention.detach().transpose(-2, -1) @ (relevance / out.detach())))
    torch.testing.assert_close(rv.sum(), relevance.sum())


def test_bilinear_and_softmax_rules_follow_attnlrp():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 4, requires_grad=True)
    b = torch.rand(2, 4, 5, requires_grad=True)
    out = _Bilinear.apply(a, b, 0.0, None)
    r = torch.rand_like(out)
    ra, rb = torch.autograd.grad(out, (a, b), r)
    s = r / (2 * out.detach())
    torch.testing.assert_close(ra, a.detach() * (s @ b.detach().transpose(-2, -1)))
    torch.testing.assert_close(rb, b.detach() * (a.detach().transpose(-2, -1) @ s))
    torch.testing.assert_close(ra.sum() + rb.sum(), r.sum())  # the bilinear rule conserves
    x = torch.randn(2, 6, requires_grad=True)
    p = _Softmax.apply(x, -1)
    torch.testing.assert_close(p, torch.softmax(x, -1))
    r = torch.rand_like(p)
    (rx,) = torch.autograd.grad(p, x, r)
    torch.testing.assert_close(rx, x.detach() * (r - p.detach() * r.sum(-1, keepdim=True)))


def test_timm_fused_and_explicit_attention_give_the_same_map(guard):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=4
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = []
    for fused in (True, False):
        for block in model.blocks:
            block.attn.fused_attn = fused
        with guard(model):
            maps.append(xw.explain(model, x, [1, 3], "lrp_composite").pixel)
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-6 * maps[1].abs().max().item())
    assert maps[0].abs().sum() > 0


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
def test_lrp_runs_on_tiny_torchvision_transformers(attention, guard):
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=4
    ).eval()
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero
    swin = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[2, 2], num_classes=4
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    for model in (vit, swin):
        with guard(model):
            e = xw.explain(model, x, [0, 3], "lrp_composite", attention=attention)
        assert torch.isfinite(e.pixel).all() and (e.attribution.flatten(1).abs().sum(1) > 0).all()
    with pytest.raises(xw.MethodError, match="attention must be one of"):
        xw.explain(vit, x, 0, "lrp_epsilon", attention="full")


class PositionEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, 1, 2, 2))
        self.fc = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.fc((x + self.position).flatten(1))


def test_an_added_constant_keeps_its_share_like_a_bias():
    # R_x = x ⊙ R / (x + p): what LRP-0 gives the input of an affine layer whose bias is p; the reference
    # AttnLRP implementation (lxt, gradient × input) agrees (benchmarks/lxt_check.py)
    torch.manual_seed(0)
    model = PositionEmbedding().eval()
    x = torch.randn(3, 1, 2, 2)
    e = xw.explain(model, x, [0, 1, 0], "lrp_epsilon", epsilon=0.0)
    z = (x + model.position).detach().flatten(1)
    r_z = z * model.fc.weight.detach()[torch.tensor([0, 1, 0])]
    torch.testing.assert_close(e.pixel.flatten(1), x.flatten(1) * r_z / z)
