"""Explanation: display normalisation without an absolute floor, and the degenerate-map flag."""

import torch
from modelguard import SmallCNN
from torch import nn

import xai_widgets as xw
from xai_widgets.explanation import degenerate_reason, normalize_map


def test_normalisation_has_no_absolute_floor():
    """A map peaking at 1e-15 normalised to 0.001 (a 1e-12 floor); all-zero maps stay 0."""
    maps = torch.zeros(3, 8, 8)
    maps[0, 2, 3], maps[0, 4, 4] = 1e-15, -0.5e-15
    maps[1] = torch.linspace(-3e-20, 1e-20, 64).view(8, 8)
    for mode in ("abs", "signed", "minmax"):
        out = normalize_map(maps, mode, percentile=100.0)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[:2].abs().flatten(1).amax(1), torch.ones(2), msg=mode)
        assert torch.equal(out[2], torch.zeros(8, 8)), mode
    torch.testing.assert_close(normalize_map(maps, "signed", 100.0)[0, 4, 4], torch.tensor(-0.5))
    # a sparse map whose 99th percentile is 0: every non-zero value is beyond it
    assert normalize_map(maps[:1], "abs")[0, 2, 3] == 1.0


def test_degenerate_reason_per_sample():
    maps = torch.randn(4, 5, 5)
    maps[1] = 0.0
    maps[2] = 3.25
    maps[3, 0, 0] = float("nan")
    assert degenerate_reason(maps[:1]) is None
    assert degenerate_reason(maps[1:2]) == "all zero"
    assert degenerate_reason(maps[2:3]) == "constant"
    assert degenerate_reason(maps[3:4]) == "non-finite"
    assert degenerate_reason(maps) == "sample 1: all zero; sample 2: constant; sample 3: non-finite"


def test_explain_flags_all_zero_and_constant_maps_and_not_normal_ones():
    torch.manual_seed(0)
    dead = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with torch.no_grad():
        dead[0].weight.zero_()  # the output no longer depends on the input
    x = torch.randn(2, 3, 16, 16)
    for method in ("saliency", "lrp_epsilon", "integrated_gradients"):
        assert xw.explain(dead.eval(), x, 1, method).extras["degenerate"] == (
            "sample 0: all zero; sample 1: all zero"
        ), method
    model = SmallCNN().eval()
    one = x[:1]
    assert "degenerate" not in xw.explain(model, one, 1, "saliency").extras
    assert "degenerate" not in xw.explain(model, one, 1, "gradcam").extras
    # a CAM at a 1×1 layer is one number upsampled: constant
    assert xw.explain(model, one, 1, "gradcam", layer="pool").extras.get("degenerate") == "constant"
