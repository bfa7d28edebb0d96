"""Export a CAManim film: MP4 and GIF (one captioned frame per layer) and a PNG contact sheet.

Frames are the input picture with the layer's normalised map blended on top in a colormap, and a caption
band naming the layer, its index, kind and raw resolution (drawn with Pillow). Video goes through imageio
with imageio-ffmpeg's bundled ffmpeg binary (no system ffmpeg needed); GIFs through Pillow.

Example:
    >>> film = xw.camanim(model, x)  # doctest: +SKIP
    >>> film.save("film.mp4"); film.save("film.gif"); film.save("layers.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .colormaps import colormap_table
from .errors import InputError

if TYPE_CHECKING:
    from .all_layers import CAManimResult

VIDEO_SUFFIXES = (".mp4", ".gif")


def _font(height: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=height)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _frame_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Longer side ``size``, both sides multiples of 16 (what H.264 encoders want)."""
    scale = size / max(h, w)
    return max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)


def render_frames(
    film: CAManimResult,
    mode: str = "global",
    sample: int = 0,
    colormap: str = "inferno",
    alpha: float = 0.6,
    size: int = 256,
    caption: bool = True,
) -> np.ndarray:
    """L×H'×W'×3 uint8 frames: the picture with each layer's map (``mode`` "local" or "global") blended in
    at opacity ``alpha``, scaled so the longer side is ``size`` px, with a caption band under each frame."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    if not 0 <= sample < film.maps.shape[1]:
        raise InputError(f"sample {sample} is out of range: the film has {film.maps.shape[1]} images")
    maps = film.normalized(mode)[:, sample : sample + 1].float().cpu()
    h, w = _frame_size(*film.maps.shape[-2:], size)
    maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    picture = film.image[sample : sample + 1].float().cpu()
    picture = picture.expand(1, 3, *picture.shape[-2:]) if picture.shape[1] == 1 else picture[:, :3]
    picture = F.interpolate(picture, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    table = torch.from_numpy(colormap_table(colormap)).float() / 255
    colours = table[(maps * 255).round().long()]
    frames = ((1 - alpha) * picture.clamp(0, 1) + alpha * colours).mul(255).round().to(torch.uint8).numpy()
    if not caption:
        return frames
    line = max(10, w // 24)
    band = 2 * line + 6
    font = _font(line)
    out = np.zeros((len(film), h + band, w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = Image.new("RGB", (w, h + band))
        image.paste(Image.fromarray(frame), (0, 0))
        draw = ImageDraw.Draw(image)
        res = "x".join(str(v) for v in film.resolutions[i])
        lines = (f"{i + 1}/{len(film)}  {film.names[i]}", f"{film.kinds[i]}, {res}")
        for k, text in enumerate(lines):
            draw.text(
                (3, h + 2 + k * (line + 2)), _fit(draw, text, font, w - 6), fill=(255, 255, 255), font=font
            )
        out[i] = np.asarray(image)
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` cut from the left (keeping the end of a long layer name) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad height and width to multiples of 16 for the video encoder (the caption band changes the height)."""
    pad_h, pad_w = -frames.shape[1] % 16, -frames.shape[2] % 16
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0))) if pad_h or pad_w else frames


def save_video(film: CAManimResult, path: str | Path, fps: float = 4.0, **render: Any) -> Path:
    """Write the film as MP4 (H.264 via imageio-ffmpeg) or GIF (by the suffix), one frame per layer.

    ``render`` options go to :func:`render_frames` (mode, sample, colormap, alpha, size, caption).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"unknown video format {path.suffix!r}; use .mp4 or .gif")
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}")
    frames = render_frames(film, **render)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        # a fast octree palette per frame: Pillow's default median-cut quantisation is ~50× slower
        images = [
            Image.fromarray(frame).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
            for frame in frames
        ]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)
        return path
    with imageio.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        quality=8,
        pixelformat="yuv420p",
        macro_block_size=16,
        ffmpeg_log_level="error",
    ) as writer:
        for frame in _even(frames):
            writer.append_data(frame)
    return path


def contact_sheet(film: CAManimResult, columns: int | None = None, **render: Any) -> Image.Image:
    """All captioned frames on one grid (``columns`` per row; default about square; ``columns=len(film)``
    gives a strip)."""
    frames = render_frames(film, **render)
    columns = columns or math.ceil(math.sqrt(len(frames)))
    if columns < 1:
        raise InputError(f"columns must be a positive int, got {columns}")
    rows = math.ceil(len(frames) / columns)
    h, w = frames.shape[1:3]
    sheet = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, frame in enumerate(frames):
        sheet.paste(Image.fromarray(frame), ((i % columns) * w, (i // columns) * h))
    return sheet


def save(film: CAManimResult, path: str | Path, **options: Any) -> Path:
    """Write ``film`` to ``path``: .mp4 or .gif video, or .png contact sheet (``columns`` option)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        path.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(film, **options).save(path)
        return path
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"cannot export to {path.name!r}: use a .mp4, .gif or .png file name")
    return save_video(film, path, **options)
