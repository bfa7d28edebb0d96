"""Pictures in, model input out: the one image pipeline of the package, an offline photo gallery, ImageNet labels.

Scripts (``load_image``) and widgets (``ExplanationState.set_image``, ``HeatmapView``) read pictures through the
same three steps, so the same file gives bitwise the same model input everywhere:

1. :func:`read_picture`: a path, file bytes, gallery name, PIL image, numpy array or tensor → C×H×W float32 in
   [0, 1] (C = 1 or 3; RGBA composited over white), or an ``InputError`` that says why not;
2. :func:`fit_picture`: the model's channel count (grey repeated to RGB, RGB → ITU-R BT.601 luma) and input
   size, by ``fit="crop"`` (default: scale the shorter side to cover, centre-crop, as torchvision's
   classification transforms ``Resize`` + ``CenterCrop`` do) or ``fit="stretch"`` (both sides independently);
3. the adapter's ``preprocess`` (normalisation) and device, in :func:`load_image`.

The gallery holds real photographs that ship with scikit-image, and ``torchvision_adapter`` wraps a
torchvision ImageNet classifier with the ImageNet mean/std and the 1000 class names from torchvision's weight
metadata (no download either way).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError
from .model import ModelAdapter

MAX_PIXELS = 50_000_000
"""Largest picture accepted (height × width): 50 megapixels."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

GALLERY: dict[str, str] = {
    "astronaut": "Eileen Collins, NASA astronaut (scikit-image: astronaut)",
    "chelsea": "Chelsea the cat, a tabby (scikit-image: chelsea)",
    "coffee": "a cup of coffee on a saucer (scikit-image: coffee)",
    "rocket": "a rocket on its launch pad (scikit-image: rocket)",
}
"""Photographs that ship offline with scikit-image, with a caption."""

# ITU-R BT.601 luma, the weights PIL uses for mode "L"
_LUMA = (0.299, 0.587, 0.114)

Fit = Literal["crop", "stretch"]
FITS: tuple[str, ...] = ("crop", "stretch")
"""How a picture is brought to the model's input size: ``"crop"`` (scale the shorter side to cover the size,
then take the centre, as torchvision's ``Resize`` + ``CenterCrop``) or ``"stretch"`` (each side scaled
independently, the aspect ratio is not kept)."""


def load_image(
    source: Any,
    adapter: ModelAdapter | None = None,
    size: int | Sequence[int] | None = None,
    fit: Fit = "crop",
) -> Tensor:
    """Load a picture as a normalised 1×C×H×W float batch for ``adapter``.

    Args:
        source: a path (str or Path), a gallery name (``"chelsea"``, see :func:`gallery`), the bytes of an
            image file, a PIL image, a numpy array (H×W or H×W×C; uint8, uint16, bool, or float in [0, 1]) or a
            tensor (H×W, C×H×W or 1×C×H×W; same dtypes).
        adapter: the model it is for. Its channel count decides the conversion (grey is repeated to RGB, RGB
            becomes BT.601 luma for a one-channel model, RGBA is composited over white), its explicit
            ``input_size`` the size, its ``preprocess`` the normalisation and its device the placement.
            Without an adapter the picture comes back in [0, 1] on the CPU (RGBA composited to RGB).
        size: bring the picture to ``size``×``size`` or (H, W) instead (bilinear with antialiasing).
        fit: ``"crop"`` (default: shorter side scaled to cover, centre crop, as torchvision's classification
            transforms) or ``"stretch"`` (both sides scaled independently); see :data:`FITS`.

    Raises:
        InputError: unreadable or non-image file, an empty picture, more than 50 megapixels, a channel count
            that cannot be converted, an unsupported dtype, non-finite values or floats outside [0, 1].

    Example:
        >>> from xai_widgets import zoo
        >>> adapter = zoo.load("shapes-resnet", device="cpu")
        >>> load_image("chelsea", adapter).shape
        torch.Size([1, 3, 64, 64])
    """
    picture = load_picture(source, adapter, size, fit)
    if adapter is None:
        return picture.unsqueeze(0)
    return adapter.preprocess(picture.unsqueeze(0))


def load_picture(
    source: Any,
    adapter: ModelAdapter | None = None,
    size: int | Sequence[int] | None = None,
    fit: Fit = "crop",
) -> Tensor:
    """The picture of :func:`load_image` before normalisation: C×H×W float32 in [0, 1] on the CPU, with the
    adapter's channel count and input size (or ``size``). Widgets keep this and display it."""
    channels = _adapter_channels(adapter)
    target = _target_size(adapter, size)
    return fit_picture(read_picture(source), channels, target, fit)


def read_picture(source: Any) -> Tensor:
    """Any accepted source (see :func:`load_image`) as a C×H×W float32 picture in [0, 1] on the CPU, with
    C = 1 (grey) or 3 (RGB; an alpha channel is composited over white)."""
    picture = _to_chw(source)
    if picture.shape[0] == 4:
        alpha = picture[3:]
        picture = picture[:3] * alpha + (1 - alpha)
    return picture


def fit_picture(
    picture: Tensor,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    fit: Fit = "crop",
) -> Tensor:
    """Match a C×H×W picture in [0, 1] to a model: ``channels`` (grey ↔ RGB by BT.601) and ``size`` (H, W)
    by ``fit`` (:data:`FITS`); None keeps that property. Bilinear with antialiasing, clamped to [0, 1]."""
    if fit not in FITS:
        raise InputError(f"fit must be one of {', '.join(map(repr, FITS))}, got {fit!r}")
    picture = _convert_channels(picture, channels)
    if size is not None and tuple(picture.shape[-2:]) != tuple(size):
        picture = _resize(picture.unsqueeze(0), (int(size[0]), int(size[1])), fit)[0]
    return picture.contiguous()


def to_uint8(picture: Tensor) -> np.ndarray:
    """A C×H×W picture in [0, 1] as the H×W×3 uint8 array the views display (grey repeated to RGB)."""
    picture = picture.detach().cpu().float()
    if picture.shape[0] == 1:
        picture = picture.expand(3, -1, -1)
    return np.round(picture[:3].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


def _resize(batch: Tensor, target: tuple[int, int], fit: str) -> Tensor:
    """1×C×h×w → 1×C×H×W. ``crop``: the shorter side (relative to the target) becomes the target's, the other
    ``int(side × scale)`` as torchvision's ``Resize``, then the centre is cut with torchvision's offsets
    (``round((h - H) / 2)``); ``stretch``: straight to H×W."""
    height, width = batch.shape[-2:]
    target_height, target_width = target
    if fit == "stretch":
        resized = target
    elif target_height / height >= target_width / width:
        resized = (target_height, max(target_width, int(width * target_height / height)))
    else:
        resized = (max(target_height, int(height * target_width / width)), target_width)
    if resized != (height, width):
        batch = F.interpolate(batch, size=resized, mode="bilinear", align_corners=False, antialias=True)
    top = int(round((resized[0] - target_height) / 2.0))
    left = int(round((resized[1] - target_width) / 2.0))
    return batch[..., top : top + target_height, left : left + target_width].clamp(0, 1)


# ------------------------------------------------------------------------------------------ reading
def _to_chw(source: Any) -> Tensor:
    """Any accepted source → C×H×W float32 in [0, 1] on the CPU, checked for size and values."""
    if isinstance(source, str) and source in GALLERY and not Path(source).is_file():
        source = gallery_image(source)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_bytes(bytes(source))
    if isinstance(source, PIL.Image.Image):
        return _from_pil(source, str(getattr(source, "filename", "") or "the PIL image"))
    if isinstance(source, np.ndarray):
        if source.ndim in (2, 3):
            _check_size(source.shape[0], source.shape[1], "the array")
        return _from_array(torch.from_numpy(np.array(source)), channels_last=True, what="array")
    if isinstance(source, Tensor):
        tensor = source.detach().cpu()
        if tensor.ndim == 4:
            if tensor.shape[0] != 1:
                raise InputError(
                    f"load_image takes one picture; got a batch of {tensor.shape[0]} (shape {tuple(tensor.shape)})"
                )
            tensor = tensor[0]
        return _from_array(tensor, channels_last=False, what="tensor")
    raise InputError(
        f"cannot load an image from {type(source).__name__}; give a file path, a gallery name "
        f"({', '.join(GALLERY)}), image file bytes, a PIL image, a numpy array (H×W or H×W×C) or a tensor (C×H×W)"
    )


def _missing_file(path: Path) -> str:
    """The words for a path that is no file, pointing to the calls that work."""
    text = str(path)
    names = ", ".join(repr(name) for name in GALLERY)
    for name, caption in GALLERY.items():
        if text == caption:
            return (
                f"{text!r} is the caption of gallery image {name!r}, not an image: pass the name "
                f"(load_image({name!r})) or the photograph (xai_widgets.images.gallery()[{name!r}])"
            )
    return (
        f"no image file at {text!r}; give an existing file, or a gallery name ({names}), "
        "e.g. load_image('chelsea'), or xai_widgets.images.gallery() (name → photograph)"
    )


def _read_file(path: Path) -> Tensor:
    if not path.is_file():
        raise InputError(_missing_file(path))
    return _decode(path, str(path))


def _read_bytes(data: bytes) -> Tensor:
    if not data:
        raise InputError("the image file bytes are empty")
    return _decode(io.BytesIO(data), "the image file bytes")


def _decode(file: Any, what: str) -> Tensor:
    """Open an image file (path or file object) with PIL: size checked from the header before decoding."""
    path = what if what.startswith("the ") else repr(what)
    try:
        with PIL.Image.open(file) as image:
            _check_size(image.height, image.width, what)
            image.load()
            return _from_pil(image, what)
    except InputError:
        raise
    except PIL.Image.DecompressionBombError as error:  # PIL's own limit, far above ours: still too large
        raise InputError(f"{path} has more than {MAX_PIXELS // 1_000_000} megapixels ({error})") from error
    except PIL.UnidentifiedImageError as error:
        raise InputError(
            f"cannot read {path}: not an image PIL can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(
            f"cannot read {path}: not an image PIL can read, or a damaged one ({type(error).__name__}: {error})"
        ) from error


def _from_pil(image: PIL.Image.Image, what: str) -> Tensor:
    _check_size(image.height, image.width, what)
    if image.mode.startswith("I;16"):
        array = np.array(image).astype(np.uint16)
    elif image.mode == "I":  # 32-bit integer grey: 8- or 16-bit data, judged by its range
        values = np.asarray(image).astype(np.float32)
        array = (values / (255.0 if values.max(initial=0) <= 255 else 65535.0)).clip(0, 1)
    elif image.mode == "F":
        array = np.array(image, dtype=np.float32)
    elif image.mode in ("1", "L"):
        array = np.array(image.convert("L"))
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        array = np.array(image.convert("RGBA"))
    else:
        array = np.array(image.convert("RGB"))
    return _from_array(torch.from_numpy(np.ascontiguousarray(array)), channels_last=True, what=what)


def _from_array(data: Tensor, channels_last: bool, what: str) -> Tensor:
    shape = tuple(data.shape)
    if data.ndim == 2:
        data = data.unsqueeze(0)
    elif data.ndim == 3:
        if channels_last:
            data = data.permute(2, 0, 1)
    else:
        layout = "H×W or H×W×C" if channels_last else "H×W, C×H×W or 1×C×H×W"
        raise InputError(f"the {what} must be a picture of shape {layout}, got shape {shape}")
    channels, height, width = data.shape
    _check_size(height, width, f"the {what}")
    if channels == 0:
        raise InputError(f"the {what} has no channels (shape {shape})")
    if channels not in (1, 3, 4):
        layout = "H×W×C" if channels_last else "C×H×W"
        raise InputError(
            f"the {what} has {channels} channels (read as {layout}, shape {shape}); "
            "a picture has 1 (grey), 3 (RGB) or 4 (RGBA)"
        )
    if data.dtype == torch.uint8:
        picture = data.float() / 255.0
    elif data.dtype == torch.uint16:
        picture = data.float() / 65535.0
    elif data.dtype == torch.bool:
        picture = data.float()
    elif data.is_floating_point():
        picture = data.float()
        if not torch.isfinite(picture).all():
            raise InputError(f"the {what} contains NaN or infinite values")
        low, high = float(picture.min()), float(picture.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise InputError(
                f"a float {what} must hold values in [0, 1], got [{low:.3g}, {high:.3g}]; "
                "pass uint8 for 0–255 pictures (or divide by 255), and the picture rather than normalised "
                "model input (the adapter's preprocessing normalises it)"
            )
        picture = picture.clamp(0, 1)
    else:
        raise InputError(
            f"unsupported dtype {data.dtype} for the {what}; use uint8, uint16, bool or float in [0, 1]"
        )
    return picture.contiguous()


def _check_size(height: int, width: int, what: str) -> None:
    if height == 0 or width == 0:
        raise InputError(f"{what} is empty ({height}×{width} pixels)")
    if height * width > MAX_PIXELS:
        raise InputError(
            f"{what} has {height}×{width} = {height * width / 1e6:.0f} megapixels; at most "
            f"{MAX_PIXELS // 1_000_000} are accepted (downscale it first)"
        )


# --------------------------------------------------------------------------------------- converting
def _adapter_channels(adapter: ModelAdapter | None) -> int | None:
    if adapter is None:
        return None
    if not isinstance(adapter, ModelAdapter):
        raise InputError(
            f"adapter must be a ModelAdapter (xai_widgets.as_adapter(model)), got {type(adapter).__name__}"
        )
    return adapter.in_channels or (adapter.input_size[0] if adapter.has_input_size else None)


def _convert_channels(picture: Tensor, channels: int | None) -> Tensor:
    """Grey ↔ RGB (BT.601 luma); other mismatches are an InputError."""
    have = picture.shape[0]
    if channels is None or channels == have:
        return picture
    if have == 1 and channels == 3:
        return picture.expand(3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        return (picture * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    raise InputError(
        f"the model expects {channels} input channels; a {have}-channel picture cannot be converted"
    )


def _target_size(adapter: ModelAdapter | None, size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is not None:
        if isinstance(size, bool) or not (
            isinstance(size, int)
            or (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size))
        ):
            raise InputError(f"size must be an int or (height, width), got {size!r}")
        target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(target) < 1 or target[0] * target[1] > MAX_PIXELS:
            raise InputError(
                f"size must be positive and at most {MAX_PIXELS // 1_000_000} megapixels, got {size!r}"
            )
        return target
    if adapter is not None and adapter.has_input_size:
        return (int(adapter.input_size[1]), int(adapter.input_size[2]))
    return None


# ------------------------------------------------------------------------------------------ gallery
def gallery() -> dict[str, np.ndarray]:
    """The offline photographs: name → H×W×3 uint8 picture, usable wherever an image is
    (``AttributionExplorer(model, gallery())``); the names work too (``load_image("chelsea")``) and
    :data:`GALLERY` has their captions."""
    return {name: gallery_image(name) for name in GALLERY}


def gallery_image(name: str) -> np.ndarray:
    """The photograph ``name`` of :data:`GALLERY` as an H×W×3 uint8 array, read from scikit-image's
    package data (no download)."""
    if name not in GALLERY:
        raise InputError(f"unknown gallery image {name!r}; choose one of {', '.join(GALLERY)}")
    return _gallery_image(name).copy()


@lru_cache(maxsize=len(GALLERY))
def _gallery_image(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)


@lru_cache(maxsize=1)
def _imagenet_labels() -> tuple[str, ...]:
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, in index order, from torchvision's weight metadata (no download)."""
    return list(_imagenet_labels())


def torchvision_adapter(model: nn.Module, name: str | None = None, size: int = 224) -> ModelAdapter:
    """Wrap a torchvision ImageNet classifier: ImageNet mean/std, the 1000 class names, 3×size×size input.

    The model is not modified (put it in eval mode yourself if you use it outside xai_widgets).
    """
    return ModelAdapter(
        model,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        labels=imagenet_labels(),
        input_size=(3, size, size),
        name=name,
    )
