"""Tiny configurations of the transformer and modern-convnet classes people use (random weights, 32 px), for
the layout, attention and every-view tests. Each builder seeds its own weights, so tests can rebuild them.

torchvision's ViT initialises its head to zero (every gradient is then zero); the builders draw it at random.
"""

from __future__ import annotations

import warnings

import timm
import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer

SIZE = 32


def vit() -> VisionTransformer:
    """torchvision ViT: 32 px, 8 px patches (4×4 grid + class token), 2 blocks, width 32, 2 heads."""
    torch.manual_seed(0)
    model = VisionTransformer(SIZE, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=0.2)
    return model.eval()


def swin() -> SwinTransformer:
    """torchvision Swin: 4 px patches (8×8), two stages of one block, 2×2 windows, width 16."""
    torch.manual_seed(1)
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=5
    )
    return model.eval()


def convnext() -> ConvNeXt:
    """torchvision ConvNeXt: two stages of one block (channels-last LayerNorm/Linear/GELU inside)."""
    torch.manual_seed(2)
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=5).eval()


def timm_vit(reg_tokens: int = 0) -> nn.Module:
    """timm ViT: 32 px, 8 px patches, 2 blocks, width 32; ``reg_tokens`` register tokens after the class token."""
    torch.manual_seed(3)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=SIZE,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2,
        num_classes=5,
        reg_tokens=reg_tokens,
    )
    return model.eval()


def timm_deit() -> nn.Module:
    """timm DeiT with a distillation token (two prefix tokens, two heads averaged in eval)."""
    torch.manual_seed(4)
    model = timm.models.deit.VisionTransformerDistilled(
        img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2, num_classes=5
    )
    return model.eval()


def efficientnet() -> nn.Module:
    torch.manual_seed(5)
    return torchvision.models.efficientnet_b0(num_classes=5).eval()


def mobilenet() -> nn.Module:
    torch.manual_seed(6)
    return torchvision.models.mobilenet_v3_small(num_classes=5).eval()


def googlenet() -> nn.Module:
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.googlenet(num_classes=5, aux_logits=False, init_weights=False).eval()


BUILDERS = {
    "vit": vit,
    "swin": swin,
    "convnext": convnext,
    "timm_vit": timm_vit,
    "timm_deit": timm_deit,
    "efficientnet": efficientnet,
    "mobilenet": mobilenet,
}
