"""Map Pixel Data to per-frame byte ranges (PS3.5 §8.1 native, §A.4 encapsulated).

Native frames are contiguous runs of ``Rows * Columns * SamplesPerPixel * BitsAllocated / 8``
bytes. Encapsulated frames are groups of fragments; the grouping comes from the Extended Offset
Table (PS3.3 C.7.6.3.1.8), the Basic Offset Table (PS3.5 §A.4), a one-fragment-per-frame
layout, or, for JPEG-family codestreams, the EOI/EOC marker ``FFD9`` ending each frame.
When none of these settles it, the frames are reported as not indexable (``()``).
"""

from __future__ import annotations

import struct
from typing import Final

from dicomhub.dicom.model import ByteRange
from dicomhub.dicom.offsets import Buffer, ElementLocation
from dicomhub.errors import InvalidDicom

__all__ = ["JPEG_FAMILY_TRANSFER_SYNTAXES", "encapsulated_frames", "native_frames"]

Frames = tuple[tuple[ByteRange, ...], ...]

#: Transfer syntaxes whose frames are codestreams ending with the ``FFD9`` marker
#: (JPEG EOI, ISO 10918-1 / 14495-1; JPEG 2000 / HTJ2K EOC, ISO 15444-1 / -15).
JPEG_FAMILY_TRANSFER_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
_EOI: Final = b"\xff\xd9"


def native_frames(
    pixel: ElementLocation,
    *,
    rows: int | None,
    columns: int | None,
    samples_per_pixel: int | None,
    bits_allocated: int | None,
    number_of_frames: int | None,
    photometric_interpretation: str | None = None,
) -> Frames:
    """Return the byte range of each frame of native Pixel Data (PS3.5 §8.1.1).

    Args:
        pixel: Location of (7FE0,0010), (7FE0,0008) or (7FE0,0009).
        rows: Rows (0028,0010).
        columns: Columns (0028,0011).
        samples_per_pixel: Samples per Pixel (0028,0002); 1 when absent.
        bits_allocated: Bits Allocated (0028,0100).
        number_of_frames: Number of Frames (0028,0008); ``None`` (missing/invalid) means 1.
        photometric_interpretation: (0028,0004); native ``YBR_FULL_422`` (and the retired
            ``YBR_PARTIAL_422``) store two samples per pixel (PS3.3 C.7.6.3.1.2).

    Returns:
        One single-range tuple per frame; ``()`` when the geometry is unknown or frames are not
        byte-aligned (Bits Allocated 1 with an odd pixel count).

    Raises:
        InvalidDicom: If the value is shorter than the frames it claims to hold.
    """
    spp = samples_per_pixel or 1
    if not rows or not columns or not bits_allocated or rows < 0 or columns < 0 or spp < 0:
        return ()
    if bits_allocated < 0:
        return ()
    if photometric_interpretation in ("YBR_FULL_422", "YBR_PARTIAL_422") and spp == 3:
        spp = 2  # Y Y Cb Cr for every two pixels
    frame_bits = rows * columns * spp * bits_allocated
    if frame_bits % 8:
        return ()
    frame_bytes = frame_bits // 8
    count = number_of_frames if number_of_frames and number_of_frames > 0 else 1
    if count * frame_bytes > pixel.length:
        raise InvalidDicom(
            f"Pixel Data ({pixel.tag:08X}) too short: {count} frame(s) of {frame_bytes} bytes "
            f"need {count * frame_bytes} bytes, the value has {pixel.length}"
        )
    return tuple((ByteRange(pixel.offset + i * frame_bytes, frame_bytes),) for i in range(count))


def _group_by_offsets(
    fragments: tuple[ByteRange, ...], offsets: list[int], count: int
) -> Frames | None:
    """Group fragments by frame start offsets relative to the first fragment's Item tag."""
    if len(offsets) != count or not fragments:
        return None
    base = fragments[0].offset - 8
    index_of = {f.offset - 8 - base: i for i, f in enumerate(fragments)}
    starts: list[int] = []
    for off in offsets:
        i = index_of.get(off)
        if i is None or (starts and i <= starts[-1]):
            return None
        starts.append(i)
    if starts[0] != 0:
        return None
    bounds = [*starts, len(fragments)]
    return tuple(tuple(fragments[bounds[k] : bounds[k + 1]]) for k in range(count))


def _group_by_eoi(
    buf: Buffer, fragments: tuple[ByteRange, ...], count: int | None
) -> Frames | None:
    """Group fragments into frames ending with an ``FFD9`` marker (optionally + one pad byte).

    Returns ``None`` unless the last fragment ends a frame and, when ``count`` is given,
    exactly ``count`` frames are found.
    """
    groups: list[tuple[ByteRange, ...]] = []
    start = 0
    for i, frag in enumerate(fragments):
        end = frag.offset + frag.length
        tail = bytes(buf[max(frag.offset, end - 3) : end])
        if tail.endswith(_EOI) or (tail.endswith(b"\x00") and tail[:-1].endswith(_EOI)):
            groups.append(fragments[start : i + 1])
            start = i + 1
    if start != len(fragments) or (count is not None and len(groups) != count):
        return None
    return tuple(groups)


def encapsulated_frames(
    buf: Buffer,
    pixel: ElementLocation,
    *,
    number_of_frames: int | None,
    transfer_syntax_uid: str,
    extended_offsets: list[int] | None = None,
) -> Frames:
    """Return the fragments of each frame of encapsulated Pixel Data (PS3.5 §A.4).

    Args:
        buf: The file contents (to read the Basic Offset Table and fragment tails).
        pixel: Location of the undefined-length Pixel Data with its items.
        number_of_frames: Number of Frames (0028,0008); ``None`` if missing or invalid, in
            which case the offset tables decide, else 1.
        transfer_syntax_uid: The transfer syntax, to know whether EOI markers delimit frames.
        extended_offsets: Extended Offset Table (7FE0,0001) values, if present.

    Returns:
        Per frame, its fragments (item headers excluded); ``()`` if the mapping is ambiguous.
    """
    items = pixel.items or ()
    if len(items) < 2:
        return ()
    bot_range, fragments = items[0], items[1:]
    bot: list[int] = []
    if bot_range.length >= 4 and bot_range.length % 4 == 0:
        raw = bytes(buf[bot_range.offset : bot_range.offset + bot_range.length])
        bot = list(struct.unpack(f"<{bot_range.length // 4}L", raw))
    jpeg_family = transfer_syntax_uid in JPEG_FAMILY_TRANSFER_SYNTAXES
    count = number_of_frames if number_of_frames and number_of_frames > 0 else None
    if count is None:
        count = len(extended_offsets or ()) or len(bot)
        if not count and jpeg_family and len(fragments) > 1:
            # No usable Number of Frames and no tables: let complete codestreams decide.
            grouped = _group_by_eoi(buf, fragments, None)
            if grouped is not None:
                return grouped
        count = count or 1
    if count == 1:
        return (fragments,)
    for offsets in (extended_offsets, bot):
        if offsets:
            grouped = _group_by_offsets(fragments, offsets, count)
            if grouped is not None:
                return grouped
    if len(fragments) == count:
        return tuple((f,) for f in fragments)
    if jpeg_family and len(fragments) > count:
        grouped = _group_by_eoi(buf, fragments, count)
        if grouped is not None:
            return grouped
    return ()
