"""The rendering chain for one frame: decoded values -> 8-bit display image.

Order (PS3.3 C.11, Figure C.11-1 grayscale pipeline; PS3.18 §8.3.5 rendering parameters):
modality LUT -> VOI (requested window, preset, stored window, VOI LUT Sequence, min/max) ->
MONOCHROME1 inversion; colour data is palette-mapped or scaled to 8 bits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from dicomhub.errors import InvalidInput
from dicomhub.imaging import lut
from dicomhub.imaging.decode import Decoded
from dicomhub.imaging.module import PixelModule, Window

#: Default named windows (center, width) for ``preset=``; configurable in Settings.
DEFAULT_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (50.0, 400.0),
    "liver": (60.0, 160.0),
    "stroke": (40.0, 40.0),
}

_FUNCTIONS = {
    "LINEAR": "LINEAR",
    "LINEAR_EXACT": "LINEAR_EXACT",
    "LINEAR-EXACT": "LINEAR_EXACT",
    "SIGMOID": "SIGMOID",
}

log = logging.getLogger(__name__)


class VoiMode(StrEnum):
    """Where the VOI transform comes from when no explicit window is requested."""

    AUTO = "auto"  # stored window, else VOI LUT Sequence, else min/max
    WINDOW = "wi1"  # first stored window (falls back to min/max)
    VOI_LUT = "wl1"  # first VOI LUT Sequence item (falls back to min/max)
    MIN_MAX = "minmax"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How to render: explicit window (or preset) or a VOI mode."""

    window: Window | None = None
    voi: VoiMode = VoiMode.AUTO
    overlays: bool = False


def parse_window(text: str) -> Window:
    """Parse ``center,width[,function]`` (PS3.18 §8.3.5.1.4; function linear|linear-exact|sigmoid).

    Raises:
        InvalidInput: Not two numbers and an optional known function, or width <= 0.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidInput("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise InvalidInput("window center and width must be numbers") from exc
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise InvalidInput("window width must be a positive number")
    function = "LINEAR"
    if len(parts) == 3 and parts[2]:
        key = parts[2].upper()
        if key not in _FUNCTIONS:
            raise InvalidInput("window function must be linear, linear-exact or sigmoid")
        function = _FUNCTIONS[key]
    return Window(center, width, function)


def preset_window(name: str, presets: dict[str, tuple[float, float]]) -> Window:
    """The named window preset.

    Raises:
        InvalidInput: Unknown preset name (the reason lists the known ones).
    """
    key = name.strip().lower()
    if key not in presets:
        raise InvalidInput(f"unknown preset {name[:32]!r}; known: {', '.join(sorted(presets))}")
    c, w = presets[key]
    return Window(float(c), float(w))


def render_frame(
    module: PixelModule, decoded: Decoded, index: int, options: RenderOptions
) -> np.ndarray[Any, Any]:
    """Render decoded frame ``index`` (0-based) to ``uint8`` (rows, cols) or (rows, cols, 3)."""
    arr = decoded.array
    photometric = decoded.photometric
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        return lut.to_uint8(lut.palette(arr, module))
    if arr.ndim == 3:
        return lut.to_uint8(lut.scale_color(arr, module))
    values = lut.modality_lut(arr, module, index)
    out = _voi(values, module, index, options)
    if _inverted(module, photometric):
        out = lut.invert(out)
    frame = lut.to_uint8(out)
    if options.overlays:
        burn_overlays(frame, module)
    return frame


def burn_overlays(frame: np.ndarray[Any, Any], module: PixelModule) -> None:
    """Burn graphic overlay planes into a grayscale frame as white (PS3.3 C.9.2)."""
    header = module.header
    for group in range(0x6000, 0x6020, 2):
        if (group << 16 | 0x3000) not in header:
            continue
        try:
            from pydicom.overlays.numpy_handler import get_overlay_array

            plane = np.asarray(get_overlay_array(header, group), dtype=bool)
            origin = header[group << 16 | 0x0050].value
            r0, c0 = int(origin[0]) - 1, int(origin[1]) - 1
        except Exception:  # a malformed overlay is skipped, not fatal
            log.debug("overlay group %04X skipped", group, exc_info=True)
            continue
        if plane.ndim == 3:
            plane = plane[0]
        rows = slice(max(r0, 0), min(r0 + plane.shape[0], frame.shape[0]))
        cols = slice(max(c0, 0), min(c0 + plane.shape[1], frame.shape[1]))
        sub = plane[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
        frame[rows, cols][sub] = 255


def _voi(
    values: np.ndarray[Any, Any], module: PixelModule, index: int, options: RenderOptions
) -> np.ndarray[Any, Any]:
    if options.window is not None:
        return lut.window(values, options.window)
    windows = module.values(index).windows
    mode = options.voi
    if mode in (VoiMode.AUTO, VoiMode.WINDOW) and windows:
        return lut.window(values, windows[0])
    if mode in (VoiMode.AUTO, VoiMode.VOI_LUT) and module.has_voi_lut_sequence:
        return lut.voi_lut_sequence(values, module)
    return lut.window(values, lut.min_max_window(values))


def _inverted(module: PixelModule, photometric: str) -> bool:
    shape = str(module.header.get("PresentationLUTShape", "") or "").upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"
