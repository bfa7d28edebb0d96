"""Every registered method on a bfloat16 and a float16 model, against the same model in float32.

The error is the relative L2 distance ‖half − float32‖ / ‖float32‖ of the map, on a tiny CNN whose input is
exactly representable in bfloat16 (so SmoothGrad/VarGrad draw the same noise). CPU torch runs both half types
(convolutions included). Maps that sum many signed terms (plain and modified gradients, LRP-ε) lose the most:
bfloat16 keeps 8 significant bits, so a sum that cancels to a few percent of its terms keeps about one digit.
"""

import copy

import pytest
import torch
from modelguard import SmallCNN

import xai_widgets as xw

QUICK = {"smoothgrad": {"samples": 4}, "vargrad": {"samples": 4}, "integrated_gradients": {"steps": 8}}

# method: (bfloat16 tolerance, float16 tolerance) of the relative L2 error; measured on this model ×≈2.
TOLERANCE = {
    "saliency": (0.25, 0.1),
    "input_x_gradient": (0.2, 0.08),
    "integrated_gradients": (0.1, 0.04),
    "smoothgrad": (0.2, 0.07),
    "vargrad": (0.2, 0.07),
    "guided_backprop": (0.1, 0.025),
    "deconvnet": (0.12, 0.01),
    "rectgrad": (0.15, 0.16),  # a percentile threshold: rounding moves units across it
    "guided_gradcam": (0.13, None),
    "lrp_epsilon": (0.2, 0.1),
    "lrp_gamma": (0.07, 0.04),
    "lrp_zplus": (0.015, 0.005),
    "lrp_alpha1beta0": (0.015, 0.005),
    "lrp_alpha2beta1": (0.07, 0.03),
    "lrp_composite": (0.02, 0.07),
    "dtd": (0.02, 0.03),
    "cam": (0.01, 0.002),
    "gradcam": (0.01, 0.002),
    "gradcam_pp": (0.01, 0.03),  # cubes of float16 gradients lose precision near underflow
    "xgradcam": (0.01, 0.002),
    "layercam": (0.01, 0.002),
    "hirescam": (0.01, 0.002),
    "eigencam": (0.012, 0.002),  # its SVD runs in float32
    "scorecam": (0.01, 0.002),
    "ablationcam": (0.007, 0.004),
}
# None: the float16 map underflows on this model (Guided Grad-CAM's product of two small maps is about 3e-8,
# below float16's smallest subnormal 6e-8); it must then be flagged as degenerate, never silently wrong.
DEFAULT = (0.3, 0.3)  # a method registered elsewhere without an entry here


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    return {
        torch.float32: model,
        torch.bfloat16: copy.deepcopy(model).bfloat16(),
        torch.float16: copy.deepcopy(model).half(),
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("method", [info.name for info in xw.methods()])
def test_half_precision_is_within_the_stated_tolerance(models, method, dtype):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).bfloat16().float()
    options = QUICK.get(method, {})
    try:
        reference = xw.explain(models[torch.float32], x, [1, 2], method, **options)
    except xw.UnsupportedModelError as error:
        pytest.skip(f"not applicable to a CNN: {error}")
    try:
        half = xw.explain(models[dtype], x.to(dtype), [1, 2], method, **options)
    except xw.XAIError as error:  # a clear refusal is acceptable; any other exception fails
        assert str(error)
        return
    tolerance = TOLERANCE.get(method, DEFAULT)[0 if dtype is torch.bfloat16 else 1]
    if tolerance is None:
        assert half.extras.get("degenerate") == "sample 0: all zero; sample 1: all zero"
        return
    ref, got = reference.attribution, half.attribution.float()
    error = ((got - ref).norm() / ref.norm()).item()
    assert error <= tolerance, f"{method} in {dtype}: relative L2 error {error:.3g} > {tolerance}"
