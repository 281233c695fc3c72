"""The attributes of an instance that the pixel pipeline needs (PS3.3 C.7.6.3, C.11, C.7.6.16).

A :class:`PixelModule` is built once per instance from its header (the data set without pixel
data) and then used for every frame: frames are decoded from their own bytes, never by
re-reading the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dicomhub.errors import NotRenderable

NATIVE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    }
)

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width and VOI LUT Function."""

    center: float
    width: float
    function: str = "LINEAR"  # LINEAR | LINEAR_EXACT | SIGMOID


@dataclass(frozen=True, slots=True)
class FrameValues:
    """Per-frame pixel value transformation and windows (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10)."""

    slope: float = 1.0
    intercept: float = 0.0
    windows: tuple[Window, ...] = ()


@dataclass(frozen=True, slots=True)
class PixelModule:
    """Image Pixel module attributes (PS3.3 C.7.6.3) plus what the VOI/LUT steps need.

    Attributes:
        transfer_syntax: Transfer Syntax UID the frames are encoded in.
        header: The pydicom data set without pixel data (LUT sequences, palettes, functional
            groups); read-only by convention.
    """

    transfer_syntax: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int
    number_of_frames: int
    pixel_keyword: str
    modality: str
    header: Any = field(compare=False, repr=False)
    frame_values: tuple[FrameValues, ...] = field(compare=False, repr=False, default=())

    @property
    def encapsulated(self) -> bool:
        """Whether frames are compressed codestreams (PS3.5 §A.4)."""
        return self.transfer_syntax not in NATIVE_SYNTAXES

    @property
    def is_color(self) -> bool:
        """Whether the decoded frame has three samples per pixel."""
        return self.samples_per_pixel == 3

    @property
    def is_palette(self) -> bool:
        """PALETTE COLOR (PS3.3 C.7.6.3.1.5)."""
        return self.photometric == "PALETTE COLOR"

    @property
    def has_modality_lut_sequence(self) -> bool:
        """A Modality LUT Sequence replaces rescale (PS3.3 C.11.1)."""
        return "ModalityLUTSequence" in self.header

    @property
    def has_voi_lut_sequence(self) -> bool:
        """A VOI LUT Sequence is present (PS3.3 C.11.2)."""
        return "VOILUTSequence" in self.header

    def values(self, index: int) -> FrameValues:
        """Rescale and windows of frame ``index`` (0-based)."""
        if not self.frame_values:
            return FrameValues()
        return self.frame_values[min(index, len(self.frame_values) - 1)]

    def decode_options(self) -> dict[str, Any]:
        """Keyword options for a pydicom decoder of one frame."""
        return {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric,
            "planar_configuration": self.planar_configuration,
            "number_of_frames": 1,
            "pixel_keyword": self.pixel_keyword,
        }


def _int(ds: Any, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float) -> float:
    try:
        if value is None or value == "":
            return default
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return default


def _as_list(value: Any) -> list[Any]:
    if type(value).__name__ == "MultiValue" or isinstance(value, list | tuple):
        return list(value)
    return [value]


def _windows(item: Any) -> tuple[Window, ...]:
    """Windows stored in ``item`` (top level or a Frame VOI LUT item, PS3.3 C.11.2)."""
    centers = item.get("WindowCenter")
    widths = item.get("WindowWidth")
    if centers is None or widths is None or centers == "" or widths == "":
        return ()
    cs, ws = _as_list(centers), _as_list(widths)
    function = str(item.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    out: list[Window] = []
    for c, w in zip(cs, ws, strict=False):
        try:
            center, width = float(c), float(w)
        except (TypeError, ValueError):
            continue
        if width > 0:
            out.append(Window(center, width, function))
    return tuple(out)


def _group(fg: Any, sequence: str) -> Any:
    if fg is None or sequence not in fg:
        return None
    seq = fg.get(sequence)
    return seq[0] if seq else None


def _frame_values(ds: Any, frames: int) -> tuple[FrameValues, ...]:
    """Rescale and windows per frame: functional groups first, then the top level."""
    top = FrameValues(
        _float(ds.get("RescaleSlope"), 1.0), _float(ds.get("RescaleIntercept"), 0.0), _windows(ds)
    )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if shared is None and not per_frame:
        return (top,)
    out: list[FrameValues] = []
    for i in range(max(1, min(frames, len(per_frame)) if per_frame else 1)):
        fg = per_frame[i] if i < len(per_frame) else None
        pvt = _group(fg, "PixelValueTransformationSequence") or _group(
            shared, "PixelValueTransformationSequence"
        )
        voi = _group(fg, "FrameVOILUTSequence") or _group(shared, "FrameVOILUTSequence")
        slope = _float(pvt.get("RescaleSlope"), top.slope) if pvt is not None else top.slope
        intercept = (
            _float(pvt.get("RescaleIntercept"), top.intercept) if pvt is not None else top.intercept
        )
        windows = _windows(voi) if voi is not None else ()
        out.append(FrameValues(slope, intercept, windows or top.windows))
    return tuple(out)


def pixel_module(ds: Any, transfer_syntax: str, pixel_keyword: str | None = None) -> PixelModule:
    """Build the :class:`PixelModule` of a data set (pixel data itself need not be loaded).

    Args:
        ds: A pydicom data set (typically read with ``stop_before_pixels``).
        transfer_syntax: The Transfer Syntax UID of the stored instance.
        pixel_keyword: ``PixelData``, ``FloatPixelData`` or ``DoubleFloatPixelData`` when
            known (a header read without pixel data cannot tell); detected otherwise.

    Raises:
        NotRenderable: The instance has no image (no Rows/Columns/Bits Allocated).
    """
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    bits_allocated = _int(ds, "BitsAllocated", 0)
    if rows <= 0 or columns <= 0 or bits_allocated <= 0:
        sop = str(ds.get("SOPClassUID", "") or "")
        raise NotRenderable(f"the instance has no image pixel data (SOP Class {sop or 'unknown'})")
    keyword = pixel_keyword or next((kw for kw in PIXEL_KEYWORDS if kw in ds), "PixelData")
    frames = max(1, _int(ds, "NumberOfFrames", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    samples = _int(ds, "SamplesPerPixel", 1)
    return PixelModule(
        transfer_syntax=transfer_syntax,
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=_int(ds, "BitsStored", bits_allocated) or bits_allocated,
        pixel_representation=_int(ds, "PixelRepresentation", 0),
        photometric=photometric.strip().upper(),
        planar_configuration=_int(ds, "PlanarConfiguration", 0),
        number_of_frames=frames,
        pixel_keyword=keyword,
        modality=str(ds.get("Modality", "") or ""),
        header=ds,
        frame_values=_frame_values(ds, frames),
    )
