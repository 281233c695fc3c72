"""Resize and encode 8-bit frames as PNG, JPEG or GIF (PS3.18 §8.7.4 rendered media types)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from dicomhub.errors import InvalidInput

MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}
DEFAULT_QUALITY = 90
GIF_FRAME_MS = 100


def parse_viewport(text: str) -> tuple[int, int]:
    """Parse ``vw,vh`` (PS3.18 §8.3.5.1.3) or ``WxH``; a missing side keeps the aspect ratio.

    Raises:
        InvalidInput: Not two non-negative integers of at most 16384 (one may be empty).
    """
    parts = text.replace("x", ",").replace("X", ",").split(",")
    if len(parts) != 2:
        raise InvalidInput("viewport must be width,height")
    sizes: list[int] = []
    for part in parts:
        p = part.strip()
        if not p:
            sizes.append(0)
            continue
        if not p.isdigit() or len(p) > 5 or not 0 <= int(p) <= 16384:
            raise InvalidInput("viewport width and height must be integers 1..16384")
        sizes.append(int(p))
    if sizes == [0, 0]:
        raise InvalidInput("viewport needs a width or a height")
    return sizes[0], sizes[1]


def parse_quality(text: str) -> int:
    """Parse ``quality`` (1..100, PS3.18 §8.3.5.1.5)."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 100:
        raise InvalidInput("quality must be an integer 1..100")
    return int(text)


def fit_size(rows: int, columns: int, viewport: tuple[int, int]) -> tuple[int, int]:
    """(width, height) fitting ``viewport`` with the image's aspect ratio preserved."""
    vw, vh = viewport
    scale_w = vw / columns if vw else None
    scale_h = vh / rows if vh else None
    scale = min(s for s in (scale_w, scale_h) if s is not None)
    return max(1, round(columns * scale)), max(1, round(rows * scale))


def resize(frame: np.ndarray[Any, Any], viewport: tuple[int, int] | None) -> Image.Image:
    """The frame as a PIL image, scaled to fit ``viewport`` when given."""
    image = Image.fromarray(frame, "RGB" if frame.ndim == 3 else "L")
    if viewport is None:
        return image
    size = fit_size(frame.shape[0], frame.shape[1], viewport)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def encode(images: Sequence[Image.Image], media_type: str, quality: int | None = None) -> bytes:
    """Encode one image (PNG, JPEG) or a sequence (GIF: animated when more than one)."""
    fmt = MEDIA_TYPES[media_type]
    buf = io.BytesIO()
    if fmt == "GIF":
        first, *rest = images
        if rest:
            first.save(buf, "GIF", save_all=True, append_images=rest, duration=GIF_FRAME_MS, loop=0)
        else:
            first.save(buf, "GIF")
    elif fmt == "JPEG":
        images[0].save(buf, "JPEG", quality=quality or DEFAULT_QUALITY)
    else:
        images[0].save(buf, "PNG", compress_level=1)
    return buf.getvalue()
