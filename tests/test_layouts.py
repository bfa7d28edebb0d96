"""Token layouts: the catalogue reads transformer tokens and channels-last outputs as C×h×w maps, capture turns
activations and gradients into N×C×h×w alike, and the default CAM layers are informative (DESIGN 3.6)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from tiny_transformers import convnext, googlenet, mobilenet, swin, timm_deit, timm_vit, vit
from torch import nn

import xai_widgets as xw
from xai_widgets import ModelAdapter
from xai_widgets.layouts import Layout, guess_grid


def kinds(adapter: ModelAdapter) -> dict[str, str | None]:
    return {e.name: (e.layout.kind if e.layout is not None else None) for e in adapter.layers()}


def test_tokens_to_map_is_the_patch_grid_in_row_major_order():
    layout = Layout("tokens", channels=2, grid=(2, 3), prefix=1)
    tokens = torch.arange(1 * 7 * 2).view(1, 7, 2)  # token t, channel c holds 2t + c
    grid = layout.to_map(tokens)
    assert grid.shape == (1, 2, 2, 3)
    for row in range(2):
        for col in range(3):
            assert grid[0, :, row, col].tolist() == tokens[0, 1 + 3 * row + col].tolist()
    last = Layout("channels_last", channels=4, grid=(2, 3))
    picture = torch.randn(2, 2, 3, 4)
    assert torch.equal(last.to_map(picture), picture.permute(0, 3, 1, 2))


def test_guess_grid_takes_the_fewest_prefix_tokens():
    assert guess_grid(65, 64, 64).prefix == 1 and guess_grid(65, 64, 64).grid == (8, 8)
    assert guess_grid(201, 224, 224).prefix == 5  # class + 4 registers + 14×14
    assert guess_grid(64, 64, 64).prefix == 0
    assert guess_grid(2 + 4 * 6, 32, 48).grid == (4, 6)


def test_vit_catalogue_reads_blocks_as_token_maps():
    adapter = ModelAdapter(vit(), input_size=(3, 32, 32))
    block = adapter.resolve_layer("encoder.layers.encoder_layer_1")
    assert block.kind == "block" and block.out_shape == (17, 32)
    assert block.layout.kind == "tokens" and block.layout.prefix == 1 and block.map_shape == (32, 4, 4)
    assert adapter.resolve_layer("encoder.layers.encoder_layer_0.mlp.0").map_shape == (64, 4, 4)
    assert not adapter.resolve_layer("encoder.layers.encoder_layer_0.self_attention").spatial  # a tuple
    assert not adapter.resolve_layer("heads.head").spatial


def test_timm_prefix_tokens_are_dropped():
    adapter = ModelAdapter(timm_vit(reg_tokens=4), input_size=(3, 32, 32))
    norm = adapter.resolve_layer("blocks.1.norm1")
    assert norm.out_shape == (21, 32) and norm.layout.prefix == 5 and norm.map_shape == (32, 4, 4)
    deit = ModelAdapter(timm_deit(), input_size=(3, 32, 32))
    assert deit.resolve_layer("blocks.0").layout.prefix == 2  # class and distillation tokens
    assert adapter.default_cam_layer().name == "blocks.1.norm1"
    assert deit.default_cam_layer().name == "blocks.1.norm1"
    # heads × tokens × head dims inside timm's attention are no map
    assert adapter.resolve_layer("blocks.0.attn.q_norm").out_shape == (2, 21, 16)
    assert not adapter.resolve_layer("blocks.0.attn.q_norm").spatial


def test_swin_and_convnext_channels_last_layers():
    adapter = ModelAdapter(swin(), input_size=(3, 32, 32))
    layouts = kinds(adapter)
    assert layouts["features.1.0"] == layouts["features.3.0"] == "channels_last"
    assert adapter.resolve_layer("features.3.0").map_shape == (32, 4, 4)
    assert layouts["permute"] == "channels_first"
    assert adapter.default_cam_layer().name == "norm" and adapter.default_cam_layer().map_shape == (32, 4, 4)
    net = ModelAdapter(convnext(), input_size=(3, 32, 32))
    layouts = kinds(net)
    inside = [f"features.1.0.block.{i}" for i in range(1, 6)]
    assert [layouts[name] for name in inside] == [
        "channels_last"
    ] * 5  # permute, LayerNorm, Linear, GELU, Linear
    assert layouts["features.1.0.block.6"] == layouts["features.1.0"] == "channels_first"
    assert layouts["features.2.0"] == "channels_first"  # LayerNorm2d permutes inside
    assert net.resolve_layer("features.1.0.block.3").map_shape == (64, 8, 8)


def test_maxvit_window_partitions_are_not_read_as_maps():
    torch.manual_seed(0)
    model = torchvision.models.MaxVit(
        input_size=(32, 32),
        stem_channels=8,
        partition_size=2,
        block_channels=[16],
        block_layers=[1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=5,
    ).eval()
    adapter = ModelAdapter(model, input_size=(3, 32, 32))
    for entry in adapter.spatial_layers():
        c, h, w = entry.map_shape
        assert h == w and 32 % h == 0, f"{entry.name} read as {entry.map_shape}"
    block = adapter.resolve_layer("blocks.0.layers.0")
    assert block.map_shape == (16, 8, 8)
    e = xw.explain(adapter, torch.randn(1, 3, 32, 32), 0, "gradcam")
    assert e.layer_map.shape[-2:] == (8, 8) or e.layer_map.shape[-2:] == (4, 4)


def test_capture_turns_token_activations_and_gradients_into_maps(guard):
    model = vit()
    adapter = ModelAdapter(model, input_size=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    raw = {}

    def keep(module, inputs, output):
        output.retain_grad()
        raw["out"] = output

    handle = adapter.module(layer).register_forward_hook(keep)
    try:
        model(x).gather(1, torch.tensor([[1], [2]])).sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    with guard(model):
        capture = adapter.capture(x, [layer], [1, 2])
    expected = raw["out"][:, 1:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
    assert torch.allclose(capture.acts[layer], expected.detach(), atol=1e-6)
    grad = raw["out"].grad[:, 1:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
    assert torch.allclose(capture.grads[layer], grad, atol=1e-7)
    assert raw["out"].grad[:, 1:].abs().sum() > 0


def test_a_user_reshape_transform_is_used_for_token_outputs():
    def reshape_transform(tensor, height=4, width=4):  # pytorch-grad-cam's ViT recipe
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    model = vit()
    x = torch.randn(1, 3, 32, 32)
    custom = ModelAdapter(model, input_size=(3, 32, 32), reshape_transform=reshape_transform)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    assert custom.resolve_layer(layer).layout.kind == "custom"
    assert custom.resolve_layer("conv_proj").layout.kind == "channels_first"
    ours = xw.explain(ModelAdapter(model, input_size=(3, 32, 32)), x, 1, "gradcam", layer=layer)
    theirs = xw.explain(custom, x, 1, "gradcam", layer=layer)
    assert torch.allclose(ours.layer_map, theirs.layer_map)
    with pytest.raises(xw.XAIError, match="reshape_transform must be callable"):
        ModelAdapter(model, reshape_transform="tokens")


def test_vit_default_layer_has_gradient_where_the_encoder_output_has_none():
    """After the last block only the class token reaches the head: the patch tokens' gradient is exactly zero
    there, and a Grad-CAM at the encoder output is all zero. The default (last block's ln_1) is not."""
    adapter = ModelAdapter(vit(), input_size=(3, 32, 32))
    assert adapter.default_cam_layer().name == "encoder.layers.encoder_layer_1.ln_1"
    x = torch.randn(2, 3, 32, 32)
    capture = adapter.capture(x, ["encoder.ln", "encoder.layers.encoder_layer_1.ln_1"], [0, 1])
    assert torch.count_nonzero(capture.grads["encoder.ln"]) == 0
    assert xw.explain(adapter, x, [0, 1], "gradcam", layer="encoder.ln").extras["degenerate"]
    default = xw.explain(adapter, x, [0, 1], "gradcam")
    assert "degenerate" not in default.extras and default.layer_map.shape == (2, 4, 4)


@pytest.mark.parametrize("build", [mobilenet, googlenet], ids=["mobilenet_v3_small", "googlenet"])
def test_convnet_default_layers_give_informative_maps_at_tiny_inputs(build, guard):
    """With random weights the activations at the default layer are tiny (about 1e-10) but not zero; the map
    has a spread and survives display normalisation."""
    model = build()
    x = torch.randn(2, 3, 64, 64)
    with guard(model):
        e = xw.explain(model, x, [0, 1], "gradcam")
    assert "degenerate" not in e.extras
    shown = e.normalized("minmax")
    assert (shown.flatten(1).amax(1) == 1).all() and (shown.flatten(1).amin(1) == 0).all()


def test_layer_kinds_are_unchanged_for_plain_convnets(resnet18):
    adapter = ModelAdapter(resnet18, input_size=(3, 64, 64))
    assert adapter.default_cam_layer().name == "layer4"
    assert all(e.layout.kind == "channels_first" for e in adapter.spatial_layers())
    assert (
        isinstance(adapter.resolve_layer("fc").module, nn.Linear) and not adapter.resolve_layer("fc").spatial
    )
