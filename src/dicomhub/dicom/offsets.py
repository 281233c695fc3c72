"""A fast, validating element walker that locates bulk values in a Part-10 file.

The walker reads the raw bytes (PS3.10 §7.1 File Meta Information, then the data set encoded
per the transfer syntax, PS3.5 §7.1 data elements, §7.5 nesting of data sets, §A.4 encapsulated
Pixel Data). It records where every bulk value (binary VRs and Pixel Data) lives in the file
and checks that every length fits inside its container and the file, so that truncated or
hostile input is rejected before pydicom sees it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from pydicom.datadict import dictionary_VR

from dicomhub.dicom.model import ByteRange
from dicomhub.errors import InvalidDicom

__all__ = [
    "BINARY_VRS",
    "ITEM",
    "ITEM_DELIMITATION",
    "LE_LONG",
    "LE_TAG_LEN",
    "LONG_VRS",
    "PIXEL_DATA_TAGS",
    "SEQUENCE_DELIMITATION",
    "UNDEFINED",
    "Buffer",
    "ElementLocation",
    "FileMeta",
    "WalkResult",
    "encapsulated_items",
    "implicit_vr",
    "looks_explicit",
    "read_file_meta",
    "walk_dataset",
]

#: Binary VRs whose values are candidates for bulk data (PS3.18 §F.2.7).
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Pixel Data, Float Pixel Data and Double Float Pixel Data (PS3.3 C.7.6.3): always bulk.
PIXEL_DATA_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 §7.1.2).
LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
#: Item, Item Delimitation Item and Sequence Delimitation Item tags (PS3.5 §7.5).
ITEM: Final = 0xFFFEE000
ITEM_DELIMITATION: Final = 0xFFFEE00D
SEQUENCE_DELIMITATION: Final = 0xFFFEE0DD
#: Undefined Length (PS3.5 §7.1.1).
UNDEFINED: Final = 0xFFFFFFFF
_PREAMBLE: Final = 128

#: Anything ``struct.unpack_from`` and slicing accept: the file mapped, or bytes in memory.
Buffer = bytes | bytearray | memoryview | mmap.mmap

#: Little-endian tag and 4-byte length: an item header or an implicit VR element header.
LE_TAG_LEN = struct.Struct("<HHL")
_BE_TAG_LEN = struct.Struct(">HHL")
_LE_SHORT = struct.Struct("<H")
_BE_SHORT = struct.Struct(">H")
#: A little-endian 4-byte length (explicit VR, long VRs).
LE_LONG = struct.Struct("<L")
_BE_LONG = struct.Struct(">L")


@dataclass(frozen=True, slots=True)
class ElementLocation:
    """Where a data element's value lies in the file.

    Attributes:
        tag: The element tag as a 32-bit integer.
        vr: The VR as encoded (explicit VR) or looked up (implicit VR).
        offset: Absolute offset of the value field.
        length: Length of the value field; for undefined-length encapsulated values, the
            bytes up to (excluding) the Sequence Delimitation Item (PS3.5 §A.4).
        items: For undefined-length encapsulated values, the value of every item (Basic
            Offset Table first, then the fragments), item headers excluded; else ``None``.
    """

    tag: int
    vr: str
    offset: int
    length: int
    items: tuple[ByteRange, ...] | None = None


@dataclass(frozen=True, slots=True)
class FileMeta:
    """The parsed File Meta Information group (PS3.10 §7.1).

    Attributes:
        values: Element tag to raw value bytes for every group-0002 element.
        dataset_offset: Absolute offset of the first byte after the group.
    """

    values: dict[int, bytes]
    dataset_offset: int

    def text(self, tag: int) -> str | None:
        """Return a UI/string meta value without NUL/space padding, or ``None`` if absent."""
        raw = self.values.get(tag)
        if raw is None:
            return None
        value = raw.decode("ascii", errors="replace").strip("\x00 ")
        return value or None


@dataclass(slots=True)
class WalkResult:
    """The output of :func:`walk_dataset`.

    Attributes:
        top_level: Every top-level data element by tag.
        bulk: Bulk key (PS3.18 §F.2.7 path, see :mod:`dicomhub.dicom.json_model`) to range.
        end: Offset just after the last element walked.
    """

    top_level: dict[int, ElementLocation] = field(default_factory=dict)
    bulk: dict[str, ByteRange] = field(default_factory=dict)
    end: int = 0


def _truncated(what: str, offset: int) -> InvalidDicom:
    return InvalidDicom(f"truncated or corrupt DICOM: {what} at offset {offset} runs past its end")


@lru_cache(maxsize=4096)
def implicit_vr(tag: int) -> str:
    """Return the VR to assume for ``tag`` in implicit VR (PS3.5 §6.2.2, PS3.6 dictionary).

    Ambiguous dictionary VRs (``"OB or OW"``, ``"US or OW"``...) resolve to ``OW`` (their
    binary choice) so that the walker errs on the side of recording a bulk value. Unknown tags
    are ``UN``.
    """
    group = tag >> 16
    element = tag & 0xFFFF
    if element == 0:
        return "UL"  # group length
    if group & 1:
        return "LO" if 0x0010 <= element <= 0x00FF else "UN"  # private creator / private
    try:
        vr: str = dictionary_VR(tag)
    except KeyError:
        return "UN"
    if " or " in vr:
        choices = vr.split(" or ")
        if "OW" in choices:
            return "OW"  # implicit VR Pixel Data / LUT Data are OW (PS3.5 §A.1, §8.1.2)
        binary = [c for c in choices if c in BINARY_VRS]
        return binary[0] if binary else choices[0]
    return vr


def looks_explicit(buf: Buffer, pos: int, limit: int) -> bool | None:
    """Return whether the element at ``pos`` has an explicit VR field (pydicom's heuristic)."""
    if pos + 6 > limit:
        return None
    a = buf[pos + 4]
    b = buf[pos + 5]
    return 0x40 < a < 0x5B and 0x40 < b < 0x5B


def read_file_meta(buf: Buffer, size: int) -> FileMeta:
    """Parse the preamble, ``DICM`` prefix and File Meta Information (PS3.10 §7.1).

    Args:
        buf: The file contents (bytes or an mmap/memoryview).
        size: The file size.

    Returns:
        The group-0002 values and the offset of the data set.

    Raises:
        InvalidDicom: If there is no ``DICM`` prefix or the group is malformed.
    """
    if size < _PREAMBLE + 4 or bytes(buf[_PREAMBLE : _PREAMBLE + 4]) != b"DICM":
        raise InvalidDicom(
            "not a DICOM Part 10 file: missing 128-byte preamble and 'DICM' prefix (PS3.10 §7.1)"
        )
    pos = _PREAMBLE + 4
    values: dict[int, bytes] = {}
    while pos + 8 <= size:
        group, element = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            break
        if looks_explicit(buf, pos, size):
            vr = bytes(buf[pos + 4 : pos + 6]).decode("ascii")
            if vr in LONG_VRS:
                if pos + 12 > size:
                    raise _truncated("file meta element header", pos)
                (length,) = LE_LONG.unpack_from(buf, pos + 8)
                header = 12
            else:
                (length,) = _LE_SHORT.unpack_from(buf, pos + 6)
                header = 8
        else:
            (length,) = LE_LONG.unpack_from(buf, pos + 4)
            header = 8
        if length == UNDEFINED:
            raise InvalidDicom(
                f"invalid File Meta Information: undefined length in ({group:04X},{element:04X})"
            )
        value_at = pos + header
        if value_at + length > size:
            raise _truncated(f"file meta element ({group:04X},{element:04X})", pos)
        values[(group << 16) | element] = bytes(buf[value_at : value_at + length])
        pos = value_at + length
    return FileMeta(values=values, dataset_offset=pos)


class _Walker:
    """Recursive descent over data sets, sequences and items (PS3.5 §7.5)."""

    __slots__ = ("buf", "bulk_threshold", "little", "max_depth", "result", "size")

    def __init__(
        self,
        buf: Buffer,
        size: int,
        *,
        little: bool,
        bulk_threshold: int,
        max_depth: int,
    ) -> None:
        self.buf = buf
        self.size = size
        self.little = little
        self.bulk_threshold = bulk_threshold
        self.max_depth = max_depth
        self.result = WalkResult()

    def dataset(
        self,
        pos: int,
        limit: int,
        *,
        delimited: bool,
        implicit: bool,
        depth: int,
        prefix: str,
    ) -> int:
        """Walk one data set from ``pos``; return the offset just after it.

        Args:
            pos: Offset of the first element.
            limit: The data set may not extend past this offset.
            delimited: The data set is an undefined-length item ending with an Item
                Delimitation Item; otherwise it ends exactly at ``limit``.
            implicit: Implicit VR encoding.
            depth: Sequence nesting depth of this data set (0 = top level).
            prefix: Bulk-key prefix of this data set (``""`` or ``"SSSSSSSS/i/"``).
        """
        buf = self.buf
        little = self.little
        tag_len = LE_TAG_LEN if little else _BE_TAG_LEN
        short = _LE_SHORT if little else _BE_SHORT
        long_ = LE_LONG if little else _BE_LONG
        threshold = self.bulk_threshold
        bulk = self.result.bulk
        top = self.result.top_level if depth == 0 else None
        while pos < limit:
            if pos + 8 > limit:
                raise _truncated("data element header", pos)
            group, element, length = tag_len.unpack_from(buf, pos)
            tag = (group << 16) | element
            if tag == ITEM_DELIMITATION:
                if delimited:
                    return pos + 8
                raise InvalidDicom(f"unexpected Item Delimitation Item at offset {pos}")
            if group == 0xFFFE:
                raise InvalidDicom(f"unexpected item tag ({group:04X},{element:04X}) at {pos}")
            element_implicit = implicit
            if not implicit:
                a = buf[pos + 4]
                b = buf[pos + 5]
                if 0x40 < a < 0x5B and 0x40 < b < 0x5B:
                    vr = chr(a) + chr(b)
                    if vr in LONG_VRS:
                        if pos + 12 > limit:
                            raise _truncated("data element header", pos)
                        (length,) = long_.unpack_from(buf, pos + 8)
                        header = 12
                    else:
                        (length,) = short.unpack_from(buf, pos + 6)
                        header = 8
                else:
                    element_implicit = True  # writer switched to implicit VR (pydicom does too)
            if element_implicit:
                vr = implicit_vr(tag)
                header = 8
            value_at = pos + header
            if length == UNDEFINED:
                pos = self._undefined_length(
                    tag, vr, value_at, limit, implicit=element_implicit, depth=depth, prefix=prefix
                )
                continue
            end = value_at + length
            if end > limit:
                raise _truncated(f"value of ({group:04X},{element:04X})", pos)
            if vr == "SQ" or (
                vr == "UN" and not element_implicit and length < 0xFFFF and _known_sq(tag)
            ):
                self.sequence(
                    value_at,
                    end,
                    delimited=False,
                    implicit=element_implicit,
                    depth=depth,
                    key=f"{prefix}{tag:08X}",
                )
            elif tag in PIXEL_DATA_TAGS or (vr in BINARY_VRS and length > threshold):
                bulk[f"{prefix}{tag:08X}"] = ByteRange(value_at, length)
            if top is not None:
                top[tag] = ElementLocation(tag, vr, value_at, length)
            pos = end
        if delimited:
            raise _truncated("item without Item Delimitation Item", pos)
        return pos

    def _undefined_length(
        self,
        tag: int,
        vr: str,
        value_at: int,
        limit: int,
        *,
        implicit: bool,
        depth: int,
        prefix: str,
    ) -> int:
        key = f"{prefix}{tag:08X}"
        is_sq = vr == "SQ" or (vr == "UN" and not implicit)
        if not is_sq and implicit and vr == "UN" and value_at + 4 <= limit:
            # Unknown VR: a sequence if its value starts with an Item tag (as pydicom does).
            fmt = "<HH" if self.little else ">HH"
            g, e = struct.unpack_from(fmt, self.buf, value_at)
            is_sq = ((g << 16) | e) == ITEM
        if is_sq:
            # UN of undefined length is a sequence (PS3.5 §6.2.2); items are probed for VR.
            return self.sequence(
                value_at, limit, delimited=True, implicit=implicit, depth=depth, key=key
            )
        items, end = self.encapsulated(value_at, limit)
        self.result.bulk[key] = ByteRange(value_at, end - value_at)
        if depth == 0:
            self.result.top_level[tag] = ElementLocation(tag, vr, value_at, end - value_at, items)
        return end + 8

    def sequence(
        self, pos: int, limit: int, *, delimited: bool, implicit: bool, depth: int, key: str
    ) -> int:
        """Walk the items of a sequence; return the offset just after the sequence value."""
        if depth + 1 > self.max_depth:
            raise InvalidDicom(
                f"sequences nested deeper than {self.max_depth} levels (PS3.5 §7.5) at {key}"
            )
        tag_len = LE_TAG_LEN if self.little else _BE_TAG_LEN
        index = 0
        while True:
            if not delimited and pos >= limit:
                return pos
            if pos + 8 > limit:
                raise _truncated(f"sequence {key}", pos)
            group, element, length = tag_len.unpack_from(self.buf, pos)
            tag = (group << 16) | element
            if tag == SEQUENCE_DELIMITATION:
                if delimited:
                    return pos + 8
                raise InvalidDicom(f"unexpected Sequence Delimitation Item in {key} at {pos}")
            if tag != ITEM:
                raise InvalidDicom(
                    f"expected an Item in sequence {key} at offset {pos}, "
                    f"found ({group:04X},{element:04X})"
                )
            item_at = pos + 8
            prefix = f"{key}/{index}/"
            item_implicit = implicit
            if not implicit and looks_explicit(self.buf, item_at, limit) is False:
                item_implicit = True  # PS3.5 §6.2.2: SQ content may be implicit VR
            if length == UNDEFINED:
                pos = self.dataset(
                    item_at,
                    limit,
                    delimited=True,
                    implicit=item_implicit,
                    depth=depth + 1,
                    prefix=prefix,
                )
            else:
                item_end = item_at + length
                if item_end > limit:
                    raise _truncated(f"item {index} of {key}", pos)
                self.dataset(
                    item_at,
                    item_end,
                    delimited=False,
                    implicit=item_implicit,
                    depth=depth + 1,
                    prefix=prefix,
                )
                pos = item_end
            index += 1

    def encapsulated(self, pos: int, limit: int) -> tuple[tuple[ByteRange, ...], int]:
        """Walk encapsulated items (PS3.5 §A.4); return item values and the delimiter offset."""
        return encapsulated_items(self.buf, pos, limit, LE_TAG_LEN if self.little else _BE_TAG_LEN)


def encapsulated_items(
    buf: Buffer, pos: int, limit: int, tag_len: struct.Struct = LE_TAG_LEN
) -> tuple[tuple[ByteRange, ...], int]:
    """Walk the items of an encapsulated value (PS3.5 §A.4) from ``pos``.

    Returns:
        The value of every item (Basic Offset Table first, then the fragments) and the offset
        of the Sequence Delimitation Item.

    Raises:
        InvalidDicom: An item is not an Item, has undefined length or runs past ``limit``.
    """
    items: list[ByteRange] = []
    while True:
        if pos + 8 > limit:
            raise _truncated("encapsulated Pixel Data", pos)
        group, element, length = tag_len.unpack_from(buf, pos)
        tag = (group << 16) | element
        if tag == SEQUENCE_DELIMITATION:
            return tuple(items), pos
        if tag != ITEM or length == UNDEFINED:
            raise InvalidDicom(
                f"invalid encapsulated value: expected an Item at offset {pos}, "
                f"found ({group:04X},{element:04X})"
            )
        if pos + 8 + length > limit:
            raise _truncated("encapsulated fragment", pos)
        items.append(ByteRange(pos + 8, length))
        pos += 8 + length


@lru_cache(maxsize=1024)
def _known_sq(tag: int) -> bool:
    if (tag >> 16) & 1:
        return False
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


def walk_dataset(
    buf: Buffer,
    size: int,
    start: int,
    *,
    implicit: bool,
    little: bool,
    bulk_threshold: int,
    max_depth: int,
) -> WalkResult:
    """Walk the data set that starts at ``start`` and runs to the end of the buffer.

    Args:
        buf: File contents (bytes, mmap or memoryview).
        size: Number of valid bytes in ``buf``.
        start: Offset of the first data set element (after the File Meta Information).
        implicit: Implicit VR transfer syntax (PS3.5 §A.1); the first element is still
            probed, as pydicom does, for writers that lie.
        little: Little endian byte order.
        bulk_threshold: Binary values longer than this are recorded as bulk.
        max_depth: Maximum sequence nesting depth.

    Returns:
        The top-level elements, bulk ranges and end offset.

    Raises:
        InvalidDicom: On any length running past its container or the file, malformed items,
            or nesting deeper than ``max_depth``.
    """
    walker = _Walker(buf, size, little=little, bulk_threshold=bulk_threshold, max_depth=max_depth)
    probe = looks_explicit(buf, start, size)
    if probe is not None:
        implicit = not probe
    try:
        walker.result.end = walker.dataset(
            start, size, delimited=False, implicit=implicit, depth=0, prefix=""
        )
    except (struct.error, IndexError, ValueError) as exc:  # defensive: should be unreachable
        raise InvalidDicom(f"corrupt DICOM data set: {type(exc).__name__}") from exc
    return walker.result
