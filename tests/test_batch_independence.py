"""A map must not depend on the other images of its batch: for every registered method, explaining a batch of
three different images equals explaining each image alone."""

import pytest
import torch
from modelguard import SmallCNN

import xai_widgets as xw

# Options that keep the expensive methods fast on the tiny CNN (Score-/Ablation-CAM use its 16-channel layer).
QUICK = {"smoothgrad": {"samples": 3}, "vargrad": {"samples": 3}, "integrated_gradients": {"steps": 6}}

# Relative tolerance (of the map's largest magnitude) per method; 1e-5 unless stated here with the reason.
TOLERANCE: dict[str, tuple[float, str]] = {}
DEFAULT = 1e-5

# Families whose methods must apply to a plain CNN; a method of another family (e.g. attention rollout on a
# transformer) may answer this CNN with UnsupportedModelError, reported as a skip with its message.
CNN_FAMILIES = {"gradient", "modified_backprop", "lrp", "cam"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN().eval()


def maps(e: xw.Explanation) -> dict[str, torch.Tensor]:
    out = {"attribution": e.attribution, "score": e.score}
    if e.pixel is not None:
        out["pixel"] = e.pixel
    if e.layer_map is not None:
        out["layer_map"] = e.layer_map
    return out


@pytest.mark.parametrize("method", [info.name for info in xw.methods()])
def test_a_batch_equals_the_per_image_loop(model, method):
    info = xw.get_method(method)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 32, 32, generator=generator) * torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1)
    target = [1, 3, 0]
    options = QUICK.get(method, {})
    try:
        batch = xw.explain(model, x, target, method, **options)
    except xw.UnsupportedModelError as error:
        if info.family in CNN_FAMILIES:
            raise
        pytest.skip(f"not applicable to a CNN: {error}")
    rtol = TOLERANCE.get(method, (DEFAULT, ""))[0]
    # the same image at another position of another batch, and alone
    for i in range(3):
        alone = maps(xw.explain(model, x[i : i + 1], target[i], method, **options))
        together = maps(batch)
        for key, value in alone.items():
            scale = value.abs().max().item()
            torch.testing.assert_close(
                together[key][i : i + 1],
                value,
                rtol=rtol,
                atol=rtol * scale,
                msg=f"{method}: {key} of image {i}",
            )
    shuffled = xw.explain(model, x[[2, 0, 1]], [target[2], target[0], target[1]], method, **options)
    scale = batch.attribution.abs().max().item()
    torch.testing.assert_close(shuffled.attribution[1], batch.attribution[0], rtol=rtol, atol=rtol * scale)
