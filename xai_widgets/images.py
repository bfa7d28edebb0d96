"""Pictures in, model input out: ``load_image`` for any image source, an offline photo gallery, ImageNet labels.

``load_image`` turns a path, PIL image, numpy array or tensor into the normalised 1×C×H×W batch an adapter
expects (channels converted, resized to the adapter's input size, on its device) and refuses anything that is
not a usable picture with an ``InputError`` that says why. The gallery holds real photographs that ship with
scikit-image, and ``torchvision_adapter`` wraps a torchvision ImageNet classifier with the ImageNet mean/std
and the 1000 class names from torchvision's weight metadata (no download either way).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

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


def load_image(
    source: Any,
    adapter: ModelAdapter | None = None,
    size: int | Sequence[int] | None = None,
) -> Tensor:
    """Load a picture as a normalised 1×C×H×W float batch for ``adapter``.

    Args:
        source: a path (str or Path), a PIL image, a numpy array (H×W or H×W×C; uint8, uint16, bool, or float
            in [0, 1]) or a tensor (H×W, C×H×W or 1×C×H×W; same dtypes).
        adapter: the model it is for. Its channel count decides the conversion (grey is repeated to RGB, RGB
            becomes BT.601 luma for a one-channel model, RGBA is composited over white), its explicit
            ``input_size`` the resize, its ``preprocess`` the normalisation and its device the placement.
            Without an adapter the picture comes back in [0, 1] on the CPU (RGBA composited to RGB).
        size: resize to ``size``×``size`` or (H, W) instead (bilinear with antialiasing).

    Raises:
        InputError: unreadable or non-image file, an empty picture, more than 50 megapixels, a channel count
            that cannot be converted, an unsupported dtype, non-finite values or floats outside [0, 1].

    Example:
        >>> from xai_widgets import zoo
        >>> adapter = zoo.load("shapes-resnet", device="cpu")
        >>> load_image(gallery_image("chelsea"), adapter).shape
        torch.Size([1, 3, 64, 64])
    """
    picture = _to_chw(source)
    channels = _adapter_channels(adapter)
    picture = _convert_channels(picture, channels)
    target = _target_size(adapter, size)
    batch = picture.unsqueeze(0)
    if target is not None and tuple(batch.shape[-2:]) != target:
        batch = F.interpolate(batch, size=target, mode="bilinear", align_corners=False, antialias=True).clamp(
            0, 1
        )
    if adapter is None:
        return batch
    return adapter.preprocess(batch)


# ------------------------------------------------------------------------------------------ reading
def _to_chw(source: Any) -> Tensor:
    """Any accepted source → C×H×W float32 in [0, 1] on the CPU, checked for size and values."""
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
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
        f"cannot load an image from {type(source).__name__}; give a file path, a PIL image, "
        "a numpy array (H×W or H×W×C) or a tensor (C×H×W)"
    )


def _read_file(path: Path) -> Tensor:
    if not path.is_file():
        raise InputError(f"no image file at {str(path)!r}")
    try:
        with PIL.Image.open(path) as image:
            _check_size(image.height, image.width, str(path))
            image.load()
            return _from_pil(image, str(path))
    except InputError:
        raise
    except PIL.Image.DecompressionBombError as error:  # PIL's own limit, far above ours: still too large
        raise InputError(
            f"{str(path)!r} has more than {MAX_PIXELS // 1_000_000} megapixels ({error})"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(
            f"cannot read {str(path)!r} as an image ({type(error).__name__}: {error})"
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
                "pass uint8 for 0–255 pictures (or divide by 255)"
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
    return adapter.in_channels or adapter.input_size[0]


def _convert_channels(picture: Tensor, channels: int | None) -> Tensor:
    """Grey ↔ RGB and RGBA → RGB (over white); other mismatches are an InputError."""
    if picture.shape[0] == 4:
        alpha = picture[3:]
        picture = picture[:3] * alpha + (1 - alpha)
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
def gallery() -> dict[str, str]:
    """The offline photographs: name → caption (use :func:`gallery_image` to get one)."""
    return dict(GALLERY)


def gallery_image(name: str) -> np.ndarray:
    """The photograph ``name`` from :func:`gallery` as an H×W×3 uint8 array, read from scikit-image's
    package data (no download)."""
    if name not in GALLERY:
        raise InputError(f"unknown gallery image {name!r}; choose one of {', '.join(GALLERY)}")
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
