"""The rendering chain for one frame: decoded values -> 8-bit display image.

Order (PS3.3 C.11, Figure C.11-1 grayscale pipeline; PS3.18 §8.3.5 rendering parameters):
modality LUT -> VOI (requested window, preset, stored window, VOI LUT Sequence, min/max) ->
MONOCHROME1 inversion; colour data is palette-mapped or scaled to 8 bits.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from dicomhub.errors import InvalidInput
from dicomhub.imaging import lut
from dicomhub.imaging.decode import Decoded
from dicomhub.imaging.module import PixelModule, Window

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
    frame = _through_lut(module, arr, index, options, photometric)
    if frame is None:
        frame = _gray(module, arr, index, options, photometric)
    if options.overlays:
        burn_overlays(frame, module)
    return frame


def _gray(
    module: PixelModule,
    arr: np.ndarray[Any, Any],
    index: int,
    options: RenderOptions,
    photometric: str,
) -> np.ndarray[Any, Any]:
    """Stored values -> modality LUT -> VOI -> inversion -> ``uint8`` (PS3.3 C.11, Fig. C.11-1)."""
    values = lut.modality_lut(arr, module, index)
    out = _voi(values, module, index, options)
    if _inverted(module, photometric):
        out = lut.invert(out)
    return lut.to_uint8(out)


#: Display LUTs of integer stored values, keyed by everything they depend on.
_luts: OrderedDict[tuple[Any, ...], np.ndarray[Any, Any]] = OrderedDict()
_luts_lock = threading.Lock()
_MAX_LUTS = 64  # at most 64 KiB each


def _through_lut(
    module: PixelModule,
    arr: np.ndarray[Any, Any],
    index: int,
    options: RenderOptions,
    photometric: str,
) -> np.ndarray[Any, Any] | None:
    """The grayscale chain as one table lookup, for 8- and 16-bit integer stored values.

    When the modality transform is a rescale (PS3.3 C.11.1) and the VOI transform a window
    (PS3.3 C.11.2.1.2), every step maps each stored value on its own, so the whole chain is
    a function of the stored value: it is computed once, by :func:`_gray` itself, for every
    value the data type can hold (at most 65536), and each frame is then a single indexing
    pass instead of a dozen float64 passes. The result is identical, value for value.
    Returns None where the chain depends on the frame (min/max window) or on tables in the
    header (Modality or VOI LUT Sequence): :func:`_gray` renders those directly.
    """
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2:
        return None
    if module.has_modality_lut_sequence and not lut.has_functional_groups(module):
        return None  # the sequence, not a rescale (as lut.modality_lut decides)
    window = options.window
    if window is None:
        windows = module.values(index).windows
        if options.voi not in (VoiMode.AUTO, VoiMode.WINDOW) or not windows:
            return None
        window = windows[0]
    values = module.values(index)
    inverted = _inverted(module, photometric)
    key = (arr.dtype.str, values.slope, values.intercept, window, inverted)
    with _luts_lock:
        table = _luts.get(key)
        if table is not None:
            _luts.move_to_end(key)
    if table is None:
        unsigned = np.dtype(f"u{arr.dtype.itemsize}")
        domain = np.arange(1 << (8 * arr.dtype.itemsize), dtype=unsigned).view(arr.dtype)
        table = _gray(
            module, domain[np.newaxis, :], index, RenderOptions(window=window), photometric
        )[0]
        with _luts_lock:
            _luts[key] = table
            while len(_luts) > _MAX_LUTS:
                _luts.popitem(last=False)
    indices = arr.view(f"u{arr.dtype.itemsize}")
    out: np.ndarray[Any, Any] = table.take(indices)
    return out


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
