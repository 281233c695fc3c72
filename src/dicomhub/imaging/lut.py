"""Grayscale and colour transforms to 8-bit display values.

Modality LUT (PS3.3 C.11.1), VOI LUT and window (PS3.3 C.11.2, C.11.2.1.2: LINEAR,
LINEAR_EXACT, SIGMOID), MONOCHROME1 / Presentation LUT inversion (PS3.3 C.7.6.3.1.2, C.11.6),
palette colour (PS3.3 C.7.6.3.1.5, C.7.9 segmented) and RGB scaling. Each step is a pure
function over numpy arrays.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dicomhub.imaging.module import PixelModule, Window

Array = np.ndarray[Any, Any]
OUT_MAX = 255.0


def modality_lut(arr: Array, module: PixelModule, index: int) -> Array:
    """Stored values -> modality values: Modality LUT Sequence or rescale (PS3.3 C.11.1).

    Per-frame Pixel Value Transformation (enhanced objects) takes precedence over the top level.
    """
    if module.has_modality_lut_sequence and not has_functional_groups(module):
        from pydicom.pixels.processing import apply_modality_lut

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(apply_modality_lut(arr, module.header), dtype=np.float64)
    values = module.values(index)
    out = arr.astype(np.float64)
    if values.slope != 1.0:
        out *= values.slope
    if values.intercept != 0.0:
        out += values.intercept
    return out


def has_functional_groups(module: PixelModule) -> bool:
    """Enhanced objects: per-frame Pixel Value Transformation wins (PS3.3 C.7.6.16.2.9)."""
    return "PerFrameFunctionalGroupsSequence" in module.header


def window(values: Array, w: Window) -> Array:
    """Apply a window to modality values, giving 0..255 (PS3.3 C.11.2.1.2).

    LINEAR (C.11.2.1.2.1), LINEAR_EXACT (C.11.3.2) and SIGMOID (C.11.2.1.3.1).
    """
    c, width = w.center, w.width
    if w.function == "SIGMOID":
        return OUT_MAX / (1.0 + np.exp(-4.0 * (values - c) / width))
    if w.function == "LINEAR_EXACT":
        out = ((values - c) / width + 0.5) * OUT_MAX
        return np.clip(out, 0.0, OUT_MAX)
    if width <= 1.0:
        return np.where(values > c - 0.5, OUT_MAX, 0.0)
    out = ((values - (c - 0.5)) / (width - 1.0) + 0.5) * OUT_MAX
    return np.clip(out, 0.0, OUT_MAX)


def min_max_window(values: Array) -> Window:
    """A window spanning the frame's modality values (the fallback without a stored VOI)."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return Window(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return Window(lo + 0.5, 1.0)
    return (
        Window((lo + hi) / 2.0 + 0.5, hi - lo + 1.0)
        if hi - lo >= 1.0
        else Window((lo + hi) / 2.0, hi - lo, "LINEAR_EXACT")
    )


def voi_lut_sequence(values: Array, module: PixelModule, item: int = 0) -> Array:
    """Apply item ``item`` of the VOI LUT Sequence (PS3.3 C.11.2), giving 0..255."""
    seq = module.header.VOILUTSequence
    lut_item = seq[min(item, len(seq) - 1)]
    descriptor = [int(v) for v in lut_item.LUTDescriptor]
    entries = descriptor[0] or 65536
    first = descriptor[1]
    raw = lut_item.LUTData
    if isinstance(raw, bytes):
        bits_alloc = 8 if len(raw) == entries else 16
        data = np.frombuffer(raw, dtype=np.uint8 if bits_alloc == 8 else "<u2")
    else:
        data = np.asarray(raw if isinstance(raw, list | tuple) else list(raw), dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)[:entries]
    bits = descriptor[2]
    top = float(2**bits - 1) if bits > 0 else float(data.max() or 1.0)
    if data.size and data.max() > top:
        top = float(data.max())
    # The first value mapped may be signed (US or SS descriptor, PS3.3 C.11.1.1.1).
    if first >= 32768 and module.pixel_representation == 1:
        first -= 65536
    idx = np.clip(np.rint(values - first), 0, data.size - 1).astype(np.int64)
    out: Array = data[idx] * (OUT_MAX / top)
    return out


def invert(out: Array) -> Array:
    """MONOCHROME1 / INVERSE presentation: minimum is white (PS3.3 C.7.6.3.1.2)."""
    return OUT_MAX - out


def palette(arr: Array, module: PixelModule) -> Array:
    """Palette colour (including segmented, PS3.3 C.7.9) to 0..255 RGB."""
    from pydicom.pixels.processing import apply_color_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb = apply_color_lut(arr, _little_endian_palette(module.header))
    bits = 16 if rgb.dtype.itemsize > 1 else 8
    try:
        bits = int(module.header.RedPaletteColorLookupTableDescriptor[2])
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    if bits > 8 and int(rgb.max(initial=0)) > 255:
        return rgb.astype(np.float64) * (OUT_MAX / 65535.0)
    return rgb.astype(np.float64)


_PALETTE_DATA = tuple(
    f"{s}{c}PaletteColorLookupTableData"
    for c in ("Red", "Green", "Blue")
    for s in ("", "Segmented")
)
_PALETTE_KEYWORDS = (
    *(f"{c}PaletteColorLookupTableDescriptor" for c in ("Red", "Green", "Blue")),
    *_PALETTE_DATA,
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
)


def _little_endian_palette(header: Any) -> Any:
    """The palette of a big-endian data set with its OW LUT data in little-endian order.

    pydicom's ``apply_color_lut`` reads LUT Data as little endian whatever the data set's
    encoding; a big-endian file stores OW words big endian (PS3.5 §7.3).
    """
    if getattr(header, "original_encoding", (False, True))[1] is not False:
        return header
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    copy = Dataset()
    copy.file_meta = FileMetaDataset()
    copy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for kw in _PALETTE_KEYWORDS:
        if kw in header:
            value = header[kw].value
            if kw in _PALETTE_DATA and isinstance(value, bytes) and len(value) % 2 == 0:
                value = np.frombuffer(value, dtype=">u2").astype("<u2").tobytes()
            setattr(copy, kw, value)
    return copy


def scale_color(arr: Array, module: PixelModule) -> Array:
    """RGB samples of more than 8 bits to 0..255 (by Bits Stored)."""
    if arr.dtype.kind == "f":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        return (arr - lo) * (OUT_MAX / (hi - lo)) if hi > lo else np.zeros_like(arr)
    bits = module.bits_stored if module.bits_stored > 0 else arr.dtype.itemsize * 8
    if bits <= 8 and arr.dtype.itemsize == 1:
        return arr
    return arr.astype(np.float64) * (OUT_MAX / float(2**bits - 1))


def to_uint8(out: Array) -> Array:
    """Round 0..255 values to ``uint8``."""
    if out.dtype == np.uint8:
        return out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
