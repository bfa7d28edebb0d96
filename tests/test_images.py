"""load_image: every accepted input kind becomes the adapter's batch; every bad one is a clear InputError.
The gallery and the ImageNet labels work offline."""

from __future__ import annotations

import socket
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from xai_widgets import InputError, ModelAdapter
from xai_widgets.images import (
    GALLERY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_PIXELS,
    fit_picture,
    gallery,
    gallery_image,
    imagenet_labels,
    load_image,
    torchvision_adapter,
)


class TinyNet(nn.Module):
    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(self.conv(x))


@pytest.fixture
def rgb_adapter() -> ModelAdapter:
    return ModelAdapter(TinyNet(3).eval(), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), input_size=(3, 16, 16))


@pytest.fixture
def grey_adapter() -> ModelAdapter:
    return ModelAdapter(TinyNet(1).eval(), mean=(0.1,), std=(0.3,), input_size=(1, 12, 12))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)


def expected(picture_chw: torch.Tensor, adapter: ModelAdapter) -> torch.Tensor:
    """The reference: torchvision's classification transforms (shorter side, centre crop), then mean/std."""
    side = adapter.input_size[1]
    resized = TF.center_crop(TF.resize(picture_chw.unsqueeze(0), [side], antialias=True), [side, side])
    mean = torch.tensor(adapter.mean).view(1, -1, 1, 1)
    std = torch.tensor(adapter.std).view(1, -1, 1, 1)
    return (resized.clamp(0, 1) - mean) / std


def test_every_input_kind_gives_the_same_batch(tmp_path, picture, rgb_adapter):
    path = tmp_path / "picture.png"
    PIL.Image.fromarray(picture).save(path)
    reference = expected(torch.from_numpy(picture).permute(2, 0, 1).float() / 255, rgb_adapter)
    sources = [
        str(path),
        path,
        PIL.Image.fromarray(picture),
        picture,
        picture.astype(np.float32) / 255,
        torch.from_numpy(picture).permute(2, 0, 1).contiguous(),
        torch.from_numpy(picture).permute(2, 0, 1).float().div(255).unsqueeze(0),
    ]
    for source in sources:
        batch = load_image(source, rgb_adapter)
        assert batch.shape == (1, 3, 16, 16) and batch.dtype == torch.float32
        assert batch.device == rgb_adapter.device
        torch.testing.assert_close(batch, reference, atol=1e-5, rtol=0)


def test_without_adapter_the_picture_comes_back_in_unit_range(picture):
    batch = load_image(picture)
    assert batch.shape == (1, 3, 20, 24)
    torch.testing.assert_close(batch[0], torch.from_numpy(picture).permute(2, 0, 1).float() / 255)
    assert load_image(picture, size=(10, 12)).shape == (1, 3, 10, 12)
    assert load_image(picture, size=8).shape == (1, 3, 8, 8)


def test_size_overrides_the_adapter_and_implicit_size_keeps_the_picture(picture, rgb_adapter):
    assert load_image(picture, rgb_adapter, size=32).shape == (1, 3, 32, 32)
    free = ModelAdapter(TinyNet(3).eval())
    assert load_image(picture, free).shape == (1, 3, 20, 24)


def test_grey_to_rgb_and_rgb_to_grey(picture, rgb_adapter, grey_adapter):
    grey = picture[..., 0]
    batch = load_image(grey, rgb_adapter)
    raw = batch * torch.tensor(rgb_adapter.std).view(1, 3, 1, 1) + torch.tensor(rgb_adapter.mean).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)
    luma = load_image(picture, grey_adapter)
    assert luma.shape == (1, 1, 12, 12)
    # the same conversion as PIL's mode "L" (ITU-R BT.601), up to PIL's rounding to uint8
    via_pil = load_image(PIL.Image.fromarray(picture).convert("L"), grey_adapter)
    torch.testing.assert_close(luma, via_pil, atol=1.0 / 255 / 0.3, rtol=0)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:3, :, 3] = 255  # ... opaque in the top half, transparent below
    for source in (rgba, PIL.Image.fromarray(rgba, "RGBA")):
        batch = load_image(source)
        assert batch.shape == (1, 3, 6, 6)
        torch.testing.assert_close(batch[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
        torch.testing.assert_close(batch[0, :, 5, 0], torch.tensor([1.0, 1.0, 1.0]))


def test_sixteen_bit_and_palette_files(tmp_path):
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(deep).save(path)
    batch = load_image(path)
    assert batch.shape == (1, 1, 8, 8)
    torch.testing.assert_close(batch[0, 0], torch.from_numpy(deep.astype(np.float32) / 65535))
    palette = PIL.Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).convert("P")
    assert load_image(palette).shape == (1, 3, 5, 5)


def test_on_the_adapters_device_and_dtype():
    model = TinyNet(3).double().eval()
    adapter = ModelAdapter(model, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 8, 8))
    assert load_image(np.zeros((4, 4, 3), dtype=np.uint8), adapter).dtype == torch.float64


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (np.zeros((0, 5), dtype=np.uint8), "empty"),
        (np.zeros((5, 0, 3), dtype=np.uint8), "empty"),
        (torch.zeros(3, 0, 4), "empty"),
        (np.zeros((5, 5, 2), dtype=np.uint8), "2 channels"),
        (np.zeros((5, 5, 7), dtype=np.uint8), "7 channels"),
        (torch.zeros(5, 6, 6), "5 channels"),
        (np.zeros((2, 3, 4, 4)), "shape"),
        (torch.zeros(2, 3, 4, 4), "batch of 2"),
        (np.full((4, 4), 2.0), r"\[0, 1\]"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.zeros((4, 4), dtype=np.int64), "dtype"),
        (np.zeros((4, 4), dtype=np.complex64), "dtype"),
        (12, "int"),
        (None, "NoneType"),
    ],
)
def test_bad_input_is_refused_clearly(source, words):
    with pytest.raises(InputError, match=words):
        load_image(source)


def declared_png(path, width: int, height: int):
    """A tiny PNG file whose header declares width × height pixels (nothing else is valid)."""
    PIL.Image.new("L", (1, 1)).save(path)
    header = bytearray(path.read_bytes())
    header[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR, then the chunk's CRC
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(header))
    return path


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(InputError, match="megapixels"):
        load_image(np.broadcast_to(np.zeros(1, dtype=np.uint8), (side, side)))
    with pytest.raises(InputError, match="megapixels"):
        load_image(torch.zeros(1, side, side, dtype=torch.uint8))
    # files: the header alone decides, nothing is decoded (above 179 MP PIL itself refuses to open it)
    for height in (side, 20 * side):
        with pytest.raises(InputError, match="megapixels"):
            load_image(declared_png(tmp_path / f"huge{height}.png", side, height))


def test_unreadable_files_are_refused(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="cannot read"):
        load_image(text)
    truncated = tmp_path / "cut.png"
    PIL.Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8) + 99).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(InputError, match="cannot read"):
        load_image(truncated)
    with pytest.raises(InputError, match="no image file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="no image file"):
        load_image(tmp_path)


def test_channels_that_cannot_be_converted(picture):
    adapter = ModelAdapter(TinyNet(2).eval(), input_size=(2, 8, 8))
    with pytest.raises(InputError, match="2 input channels"):
        load_image(picture, adapter)


def test_bad_size_and_adapter(picture):
    with pytest.raises(InputError, match="size"):
        load_image(picture, size=(0, 4))
    with pytest.raises(InputError, match="size"):
        load_image(picture, size="big")
    with pytest.raises(InputError, match="ModelAdapter"):
        load_image(picture, adapter=TinyNet())


def test_gallery_and_imagenet_labels_work_offline(no_network):
    photographs = gallery()
    assert {"astronaut", "chelsea", "coffee", "rocket"} <= set(photographs) == set(GALLERY)
    for name, image in photographs.items():
        assert (
            image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and min(image.shape[:2]) >= 256
        )
        np.testing.assert_array_equal(image, gallery_image(name))
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[281] == "tabby"
    with pytest.raises(InputError, match="chelsea"):
        gallery_image("lena")


def test_torchvision_adapter_prepares_imagenet_input(no_network, guard):
    import torchvision

    model = torchvision.models.resnet18(num_classes=1000).eval()
    adapter = torchvision_adapter(model)
    assert adapter.labels == imagenet_labels() and adapter.input_size == (3, 224, 224)
    with guard(model):
        batch = load_image(gallery_image("chelsea"), adapter)
        assert batch.shape == (1, 3, 224, 224)
        raw = adapter.unpreprocess(batch)
        assert 0 <= float(raw.min()) and float(raw.max()) <= 1
        assert adapter.logits(batch).shape == (1, 1000)


def test_crop_fit_matches_torchvision_resize_and_centre_crop():
    """The default fit is torchvision's Resize(shorter side) + CenterCrop, wide and tall, odd offsets too."""
    rng = torch.Generator().manual_seed(1)
    for shape, side in [((3, 20, 31), 16), ((3, 45, 17), 12), ((1, 9, 9), 5), ((3, 16, 23), 16)]:
        picture = torch.rand(shape, generator=rng)
        reference = TF.center_crop(TF.resize(picture, [side], antialias=True), [side, side]).clamp(0, 1)
        torch.testing.assert_close(fit_picture(picture, None, (side, side)), reference, atol=0, rtol=0)


def test_stretch_fit_scales_each_side_and_crop_keeps_the_aspect(picture):
    chw = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
    stretched = load_image(picture, size=(10, 30), fit="stretch")[0]
    reference = F.interpolate(chw[None], size=(10, 30), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(stretched, reference[0].clamp(0, 1), atol=0, rtol=0)
    # a 20x24 picture cropped to 20x12 keeps its scale: exactly the middle columns
    torch.testing.assert_close(load_image(picture, size=(20, 12))[0], chw[:, :, 6:18], atol=0, rtol=0)
    with pytest.raises(InputError, match="fit must be one of 'crop', 'stretch'"):
        load_image(picture, size=8, fit="pad")


def test_gallery_names_are_images_and_errors_point_to_the_working_call(rgb_adapter, no_network):
    by_name = load_image("chelsea", rgb_adapter)
    assert torch.equal(by_name, load_image(gallery_image("chelsea"), rgb_adapter))
    assert torch.equal(by_name, load_image(gallery()["chelsea"], rgb_adapter))
    with pytest.raises(InputError, match=r"no image file at 'lena'.*gallery name.*load_image\('chelsea'\)"):
        load_image("lena")
    with pytest.raises(InputError, match=r"caption of gallery image 'chelsea'.*load_image\('chelsea'\)"):
        load_image(GALLERY["chelsea"])


def test_image_file_bytes_read_like_the_file(tmp_path, picture):
    path = tmp_path / "p.png"
    PIL.Image.fromarray(picture).save(path)
    assert torch.equal(load_image(path.read_bytes()), load_image(path))
    with pytest.raises(InputError, match="cannot read the image file bytes"):
        load_image(b"not an image")
