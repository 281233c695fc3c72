"""One pass over an explicit VR little-endian data set: locations and DICOM JSON at once.

The ingest fast path. :func:`walk_and_convert` does the work of
:func:`dicomhub.dicom.offsets.walk_dataset` (same :class:`WalkResult`) and, in the same pass,
builds the DICOM JSON Model (PS3.18 §F.2) straight from the value bytes, so that neither
``pydicom.dcmread`` nor pydicom's value classes run for ordinary instances.

The output is, by construction and by test, identical to what
:func:`dicomhub.dicom.json_model.dataset_to_json` makes of ``pydicom.dcmread(...,
stop_before_pixels=True, defer_size=...)``:

* text VRs are decoded as pydicom does (PS3.5 §6.1: AE AS CS DA DT IS DS TM UI UR in the
  default repertoire; SH LO UC ST LT UT PN in the Specific Character Set), padding is
  stripped per VR (PS3.5 §6.2: leading and trailing spaces, trailing NUL for UI), values are
  split on backslashes (PS3.5 §6.4), IS and DS become JSON numbers (null when not a number);
* binary numbers (US SS UL SL FL FD AT) are unpacked, PN is split into its component groups
  (PS3.18 §F.2.2), binary VRs become bulk references or ``InlineBinary`` (PS3.18 §F.2.7).

Values outside the plain cases (escape sequences or other character sets for PN, IS/DS with
unusual characters, wrong lengths) go through pydicom's converter element by element
(:func:`dicomhub.dicom.json_model.convert_raw_element`). Anything in the *structure* that
pydicom reads in its own way (implicit VR items or elements, unknown VRs, public UN, elements
out of order, SV/UV lengths, malformed lengths) raises :class:`Unsupported`: the caller then
takes the pydicom path, which also produces the exact error for malformed input.
"""

from __future__ import annotations

import base64
import math
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import private_dictionary_VR
from pydicom.valuerep import TEXT_VR_DELIMS
from pydicom.values import convert_string

from dicomhub.dicom.json_model import MARKER, convert_raw_element
from dicomhub.dicom.model import ByteRange
from dicomhub.dicom.offsets import (
    BINARY_VRS,
    ITEM,
    ITEM_DELIMITATION,
    LE_LONG,
    LE_TAG_LEN,
    LONG_VRS,
    PIXEL_DATA_TAGS,
    SEQUENCE_DELIMITATION,
    UNDEFINED,
    ElementLocation,
    WalkResult,
    encapsulated_items,
    looks_explicit,
)
from dicomhub.errors import InvalidDicom

__all__ = ["Unsupported", "WalkJson", "walk_and_convert"]

_CHARSET_TAG: Final = 0x00080005
#: The depth limit of :func:`dicomhub.dicom.json_model.dataset_to_json`.
_JSON_MAX_DEPTH: Final = 64
_DEFAULT_ENCODINGS: Final = ("iso8859",)
#: Python codecs equal to a plain ``bytes.decode`` when there is no ESC (pydicom.charset).
_LATIN1: Final = frozenset({"iso8859", "latin_1"})
_UTF8: Final = "UTF8"

#: An explicit VR element header with a 2-byte length (PS3.5 §7.1.2); the element and item
#: primitives (tags, long VRs, item walking, the explicit VR probe) are those of
#: :mod:`dicomhub.dicom.offsets`, so both walkers read the structure the same way. SV and UV
#: are long in PS3.5 but short in the offsets walker: they are left to the pydicom path.
_HEADER = struct.Struct("<HH2sH")
_KNOWN: Final = (
    *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF"),
    *("OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "TM", "UC", "UI", "UL", "UN", "UR"),
    *("US", "UT"),
)
_VR_INFO: Final[dict[bytes, tuple[str, bool]]] = {v.encode(): (v, v in LONG_VRS) for v in _KNOWN}
#: VRs decoded with the Specific Character Set (PS3.5 §6.1.2.3).
_CHARSET_VRS: Final = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
_IS_CHARS: Final = b"0123456789+- \\"
_DS_CHARS: Final = b"0123456789+-.eE \\"
#: Integers beyond this may differ from their float, which pydicom treats specially.
_EXACT_FLOAT_INT: Final = 2**53


class Unsupported(Exception):
    """The data set needs pydicom's reader to be interpreted exactly as before."""


@dataclass(slots=True)
class WalkJson:
    """The output of :func:`walk_and_convert`.

    Attributes:
        walk: What :func:`dicomhub.dicom.offsets.walk_dataset` returns for the data set.
        metadata: DICOM JSON of the data set up to (excluding) the first top-level Pixel Data
            element, File Meta group excluded, bulk values as ``MARKER + key``.
    """

    walk: WalkResult
    metadata: dict[str, Any]


Encodings = tuple[str, ...]
#: The file mapped, or an inflated data set in memory.
Buffer = bytes | mmap.mmap
_Handler = Callable[[str, bytes, Encodings], "dict[str, Any] | None"]


def _text_attr(vr: str, parts: list[str], text: str) -> dict[str, Any]:
    """The JSON of split text values: NULs removed, empty values null (PS3.18 §F.2.3)."""
    if "\x00" in text:
        parts = [p.replace("\x00", "") for p in parts]
    if len(parts) == 1:
        return {"vr": vr, "Value": parts} if parts[0] else {"vr": vr}
    values = [p or None for p in parts]
    if not any(values):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _string(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """AS CS DA DT TM: default repertoire, trailing spaces/NULs stripped, multi-valued."""
    text = raw.decode("latin-1").rstrip(" \x00")
    return _text_attr(vr, text.split("\\"), text)


def _ae(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """AE: leading and trailing spaces are not significant (PS3.5 §6.2)."""
    text = raw.decode("latin-1")
    return _text_attr(vr, [p.strip() for p in text.split("\\")], text)


def _ui(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """UI: trailing NUL padding (PS3.5 §6.2, §9.1)."""
    text = raw.decode("latin-1").rstrip(" \x00")
    return _text_attr(vr, [p.strip() for p in text.split("\\")], text)


def _ur(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """UR: a single value; trailing spaces are not significant."""
    text = raw.decode("latin-1").rstrip()
    return _text_attr(vr, [text], text)


def _decode(raw: bytes, enc: Encodings) -> str:
    """Decode a charset-dependent value as ``pydicom.charset.decode_bytes`` does."""
    if b"\x1b" not in raw:
        first = enc[0]
        if first in _LATIN1:
            return raw.decode("latin-1")
        if first == _UTF8:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
    return decode_bytes(raw, list(enc), TEXT_VR_DELIMS)


def _multi_text(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """SH LO UC: multi-valued, trailing spaces and NULs stripped per value."""
    text = _decode(raw, enc)
    return _text_attr(vr, [p.rstrip("\x00 ") for p in text.split("\\")], text)


def _single_text(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """ST LT UT: one value (a backslash is text), trailing spaces and NULs stripped."""
    text = _decode(raw, enc).rstrip("\x00 ")
    return _text_attr(vr, [text], text)


def _pn(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """PN: Alphabetic, Ideographic and Phonetic groups (PS3.5 §6.2.1, PS3.18 §F.2.2).

    Only single-byte or UTF-8 values without escape sequences; others go to pydicom.
    """
    first = enc[0]
    raw = raw.rstrip(b"\x00 ")
    if b"\x1b" in raw or b"\x00" in raw:
        return None
    if first in _LATIN1:
        text = raw.decode("latin-1")
    elif first == _UTF8:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        return None
    parts = text.split("\\")
    if len(parts) == 1 and not parts[0].strip("="):
        return {"vr": vr}
    values: list[dict[str, str]] = []
    for part in parts:
        groups = part.split("=")
        name: dict[str, str] = {}
        if groups[0]:
            name["Alphabetic"] = groups[0]
        if len(groups) > 1:
            if groups[1]:
                name["Ideographic"] = groups[1]
            if len(groups) > 2 and groups[2]:
                name["Phonetic"] = groups[2]
        values.append(name)
    return {"vr": vr, "Value": values}


def _is(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """IS: JSON numbers; values that are not integers are null (PS3.18 §F.2.3)."""
    core = raw.rstrip(b" \x00")
    if core.translate(None, _IS_CHARS):
        return None
    parts = core.decode("ascii").split("\\")
    if len(parts) == 1 and not parts[0]:
        return {"vr": vr}
    values: list[int | None] = []
    for p in parts:
        try:
            value = int(p)
        except ValueError:
            values.append(None)
            continue
        if not -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
            return None  # pydicom makes an ISfloat of it, rounded: leave that to pydicom
        values.append(value)
    return {"vr": vr, "Value": values}


def _ds(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """DS: JSON numbers; values that are not numbers are null (PS3.18 §F.2.3)."""
    core = raw.rstrip(b" \x00")
    if core.translate(None, _DS_CHARS):
        return None
    parts = core.decode("ascii").lstrip(" ").split("\\")
    if len(parts) == 1 and not parts[0]:
        return {"vr": vr}
    values: list[float | str | None] = []
    for p in parts:
        try:
            f = float(p)
        except ValueError:
            values.append(None)
            continue
        if math.isfinite(f):
            values.append(f)
        elif math.isnan(f):
            values.append("NaN")
        else:
            values.append("Infinity" if f > 0 else "-Infinity")
    return {"vr": vr, "Value": values}


def _numbers(code: str, size: int) -> _Handler:
    def handler(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
        n, rest = divmod(len(raw), size)
        if rest:
            return None
        return {"vr": vr, "Value": list(struct.unpack(f"<{n}{code}", raw))}

    return handler


def _floats(code: str, size: int) -> _Handler:
    def handler(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
        n, rest = divmod(len(raw), size)
        if rest:
            return None
        values: list[Any] = list(struct.unpack(f"<{n}{code}", raw))
        if not all(map(math.isfinite, values)):
            values = [
                v
                if math.isfinite(v)
                else ("NaN" if math.isnan(v) else "Infinity" if v > 0 else "-Infinity")
                for v in values
            ]
        return {"vr": vr, "Value": values}

    return handler


def _at(vr: str, raw: bytes, enc: Encodings) -> dict[str, Any] | None:
    """AT: pairs of 16-bit group and element numbers, as ``GGGGEEEE`` (PS3.18 §F.2.3)."""
    n, rest = divmod(len(raw), 4)
    if rest:
        return None
    words = struct.unpack(f"<{2 * n}H", raw)
    return {"vr": vr, "Value": [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, 2 * n, 2)]}


#: VRs whose single-valued plain values the walker converts inline (no handler call): the
#: default repertoire with trailing padding (AS CS DA DT TM), UI (PS3.5 §9.1), SH LO UC in a
#: single-byte character set, and one binary integer (US UL SS SL, little endian). Anything else
#: (several values, NULs, escapes) takes the handler.
_PLAIN_STRING: Final = 1
_PLAIN_UI: Final = 2
_PLAIN_TEXT: Final = 3
_PLAIN_U16: Final = 4
_PLAIN_U32: Final = 5
_PLAIN_S16: Final = 6
_PLAIN_S32: Final = 7
#: The value length of one binary integer of each kind (PS3.5 §6.2: US SS 2, UL SL 4).
_INT_SIZE: Final = {_PLAIN_U16: 2, _PLAIN_U32: 4, _PLAIN_S16: 2, _PLAIN_S32: 4}
_PLAIN: Final[dict[str, int]] = {
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _PLAIN_STRING),
    "UI": _PLAIN_UI,
    **dict.fromkeys(("SH", "LO", "UC"), _PLAIN_TEXT),
    "US": _PLAIN_U16,
    "UL": _PLAIN_U32,
    "SS": _PLAIN_S16,
    "SL": _PLAIN_S32,
}
#: Tag to its ``GGGGEEEE`` key, for the tags seen so far (bounded).
_HEX_KEYS: dict[int, str] = {}
_HEX_CACHE_SIZE: Final = 16384

_HANDLERS: Final[dict[str, _Handler]] = {
    "AE": _ae,
    "AS": _string,
    "CS": _string,
    "DA": _string,
    "DT": _string,
    "TM": _string,
    "UI": _ui,
    "UR": _ur,
    "SH": _multi_text,
    "LO": _multi_text,
    "UC": _multi_text,
    "ST": _single_text,
    "LT": _single_text,
    "UT": _single_text,
    "PN": _pn,
    "IS": _is,
    "DS": _ds,
    "US": _numbers("H", 2),
    "SS": _numbers("h", 2),
    "UL": _numbers("L", 4),
    "SL": _numbers("l", 4),
    "FL": _floats("f", 4),
    "FD": _floats("d", 8),
    "AT": _at,
}


def _convert(
    tag: int, vr: str, raw: bytes, value_at: int, enc: Encodings, deferred: bool
) -> dict[str, Any]:
    """JSON of a non-binary, non-sequence value; pydicom's converter for unusual values."""
    if not raw:
        return {"vr": vr}
    attr = _HANDLERS[vr](vr, raw, enc)
    if attr is None:
        if deferred:
            raise Unsupported  # dcmread defers it and converts it another way
        attr = convert_raw_element(tag, vr, raw, value_at, enc)
    return attr


def _creator(raw: bytes) -> str | None:
    """A Private Creator value (PS3.5 §7.8.1) as pydicom reads it; ``None`` if unusual."""
    if not raw.isascii() or b"\\" in raw or b"\x1b" in raw:
        return None
    return raw.decode("ascii").rstrip("\x00 ")


def _private_vr(tag: int, creators: dict[int, str | None]) -> str:
    """The VR pydicom gives a private element encoded as UN (PS3.5 §6.2.2, §7.8.1)."""
    element = tag & 0xFFFF
    if 0x0010 <= element <= 0x00FF:
        return "LO"  # a Private Creator
    if not element & 0xFF00:
        return "UN"
    creator_tag = (tag & 0xFFFF0000) | (element >> 8)
    if creator_tag not in creators:
        return "UN"
    creator = creators[creator_tag]
    if creator is None:
        raise Unsupported
    return _private_dictionary_vr(tag, creator)


@lru_cache(maxsize=1024)
def _private_dictionary_vr(tag: int, creator: str) -> str:
    try:
        return str(private_dictionary_VR(tag, creator))
    except KeyError:
        return "UN"


@lru_cache(maxsize=256)
def _encodings(raw: bytes) -> Encodings:
    """Python codecs for a Specific Character Set value, as pydicom's reader computes them."""
    return tuple(convert_encodings(convert_string(raw, True)))


class _JsonWalker:
    """Recursive descent over an explicit VR little-endian data set (PS3.5 §7.1.2, §7.5)."""

    __slots__ = ("buf", "bulk", "bulk_threshold", "defer_size", "max_depth", "top")

    def __init__(
        self, buf: Buffer, *, bulk_threshold: int, max_depth: int, defer_size: int
    ) -> None:
        self.buf = buf
        self.bulk_threshold = bulk_threshold
        self.max_depth = max_depth
        self.defer_size = defer_size
        self.bulk: dict[str, ByteRange] = {}
        self.top: dict[int, ElementLocation] = {}

    def dataset(
        self,
        pos: int,
        limit: int,
        *,
        delimited: bool,
        implicit: bool,
        depth: int,
        prefix: str,
        out: dict[str, Any] | None,
        enc: Encodings,
    ) -> int:
        """Walk one data set from ``pos``, filling ``out``; return the offset after it."""
        buf = self.buf
        bulk = self.bulk
        threshold = self.bulk_threshold
        top = self.top if depth == 0 else None
        # Only top-level values longer than this are deferred by dcmread (never the charset).
        defer = self.defer_size if depth == 0 else UNDEFINED
        handlers = _HANDLERS
        plain = _PLAIN
        hexkeys = _HEX_KEYS
        last = -1
        charset_used = False
        creators: dict[int, str | None] = {}
        while pos < limit:
            if pos + 8 > limit:
                raise Unsupported
            group, element, vrb, length = _HEADER.unpack_from(buf, pos)
            tag = (group << 16) | element
            if group == 0xFFFE:
                if tag == ITEM_DELIMITATION and delimited:
                    return pos + 8
                raise Unsupported
            info = _VR_INFO.get(vrb)
            if implicit or info is None or tag <= last:
                raise Unsupported  # implicit VR, unknown VR, duplicate or unsorted tag
            last = tag
            vr, long_vr = info
            if long_vr:
                if pos + 12 > limit:
                    raise Unsupported
                (length,) = LE_LONG.unpack_from(buf, pos + 8)
                value_at = pos + 12
            else:
                value_at = pos + 8
            if top is not None and out is not None and tag in PIXEL_DATA_TAGS:
                out = None  # dcmread(stop_before_pixels=True) stops here
            hexkey = hexkeys.get(tag)
            if hexkey is None:
                hexkey = f"{tag:08X}"
                if len(hexkeys) < _HEX_CACHE_SIZE:
                    hexkeys[tag] = hexkey
            emit = out is not None and group != 0x0002
            if length == UNDEFINED:
                key = prefix + hexkey
                if vr == "SQ":
                    items: list[dict[str, Any]] | None = [] if emit else None
                    charset_used = True
                    pos = self.sequence(
                        value_at, limit, delimited=True, depth=depth, key=key, items=items, enc=enc
                    )
                    if out is not None and items is not None:
                        out[hexkey] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                    continue
                if vr not in BINARY_VRS or vr == "UN":
                    raise Unsupported
                fragments, end = self.encapsulated(value_at, limit)
                # pydicom finds the end by scanning for the delimiter's bytes.
                if buf.find(b"\xfe\xff\xdd\xe0", value_at, end + 4) != end:
                    raise Unsupported
                bulk[key] = ByteRange(value_at, end - value_at)
                if top is not None:
                    top[tag] = ElementLocation(tag, vr, value_at, end - value_at, fragments)
                if out is not None and emit:
                    out[hexkey] = {"vr": vr, "BulkDataURI": MARKER + key}
                pos = end + 8
                continue
            end = value_at + length
            if end > limit:
                raise Unsupported
            if vr == "SQ":
                seq_items: list[dict[str, Any]] | None = [] if emit else None
                charset_used = True
                self.sequence(
                    value_at,
                    end,
                    delimited=False,
                    depth=depth,
                    key=prefix + hexkey,
                    items=seq_items,
                    enc=enc,
                )
                if out is not None and seq_items is not None:
                    out[hexkey] = {"vr": "SQ", "Value": seq_items} if seq_items else {"vr": "SQ"}
            elif vr in BINARY_VRS or tag in PIXEL_DATA_TAGS:
                if vr == "UN" and not group & 1:
                    raise Unsupported  # public UN: pydicom substitutes the dictionary VR
                is_bulk = tag in PIXEL_DATA_TAGS or (vr in BINARY_VRS and length > threshold)
                if is_bulk:
                    bulk[prefix + hexkey] = ByteRange(value_at, length)
                if out is not None and emit:
                    # pydicom types a private UN by its creator's private dictionary.
                    json_vr = _private_vr(tag, creators) if vr == "UN" else vr
                    if json_vr in BINARY_VRS or tag in PIXEL_DATA_TAGS:
                        if is_bulk:
                            out[hexkey] = {"vr": json_vr, "BulkDataURI": MARKER + prefix + hexkey}
                        elif length == 0:
                            out[hexkey] = {"vr": json_vr}
                        else:
                            data = base64.b64encode(buf[value_at:end]).decode("ascii")
                            out[hexkey] = {"vr": json_vr, "InlineBinary": data}
                    elif json_vr in handlers:
                        raw = bytes(buf[value_at:end])
                        if json_vr == "LO" and 0x0010 <= element <= 0x00FF:
                            creators[tag] = _creator(raw)
                        out[hexkey] = _convert(tag, json_vr, raw, value_at, enc, length > defer)
                    else:
                        raise Unsupported  # SQ or an ambiguous VR: left to pydicom
            elif out is not None:
                if tag == _CHARSET_TAG:
                    if charset_used or vr != "CS":
                        raise Unsupported
                    try:
                        enc = _encodings(bytes(buf[value_at:end]))
                    except Exception as exc:
                        raise Unsupported from exc
                elif vr in _CHARSET_VRS:
                    charset_used = True
                    if group & 1 and 0x0010 <= element <= 0x00FF and vr == "LO":
                        creators[tag] = _creator(bytes(buf[value_at:end]))
                if emit:
                    raw = bytes(buf[value_at:end])
                    kind = plain.get(vr) if raw else None
                    if kind is None:
                        out[hexkey] = _convert(tag, vr, raw, value_at, enc, length > defer)
                    elif kind >= _PLAIN_U16:
                        # One binary integer: _numbers' result without a struct format.
                        if length == _INT_SIZE[kind]:
                            value = int.from_bytes(raw, "little", signed=kind >= _PLAIN_S16)
                            out[hexkey] = {"vr": vr, "Value": [value]}
                        else:
                            out[hexkey] = _convert(tag, vr, raw, value_at, enc, length > defer)
                    elif kind == _PLAIN_TEXT and enc[0] not in _LATIN1:
                        out[hexkey] = _convert(tag, vr, raw, value_at, enc, length > defer)
                    else:
                        # The single-valued case of _string, _ui and _multi_text: trailing
                        # spaces and NULs (UI padding) stripped, no NUL or ESC inside.
                        text = raw.decode("latin-1").rstrip(" \x00")
                        if "\\" not in text and "\x00" not in text and "\x1b" not in text:
                            if kind == _PLAIN_UI:
                                text = text.strip()
                            out[hexkey] = {"vr": vr, "Value": [text]} if text else {"vr": vr}
                        else:
                            out[hexkey] = _convert(tag, vr, raw, value_at, enc, length > defer)
            if top is not None:
                top[tag] = ElementLocation(tag, vr, value_at, length)
            pos = end
        if delimited:
            raise Unsupported
        return pos

    def sequence(
        self,
        pos: int,
        limit: int,
        *,
        delimited: bool,
        depth: int,
        key: str,
        items: list[dict[str, Any]] | None,
        enc: Encodings,
    ) -> int:
        """Walk the items of a sequence; return the offset just after the sequence value."""
        if depth + 1 > self.max_depth or depth + 1 > _JSON_MAX_DEPTH:
            raise Unsupported
        buf = self.buf
        index = 0
        while True:
            if not delimited and pos >= limit:
                return pos
            if pos + 8 > limit:
                raise Unsupported
            group, element, length = LE_TAG_LEN.unpack_from(buf, pos)
            tag = (group << 16) | element
            if tag == SEQUENCE_DELIMITATION and delimited:
                return pos + 8
            if tag != ITEM:
                raise Unsupported
            item_at = pos + 8
            # The walker and pydicom read an item whose first element looks implicit as
            # implicit VR (PS3.5 §6.2.2); only an empty item may do so here.
            implicit = looks_explicit(buf, item_at, limit) is False
            item: dict[str, Any] | None = {} if items is not None else None
            prefix = f"{key}/{index}/"
            if length == UNDEFINED:
                pos = self.dataset(
                    item_at,
                    limit,
                    delimited=True,
                    implicit=implicit,
                    depth=depth + 1,
                    prefix=prefix,
                    out=item,
                    enc=enc,
                )
            else:
                item_end = item_at + length
                if item_end > limit:
                    raise Unsupported
                self.dataset(
                    item_at,
                    item_end,
                    delimited=False,
                    implicit=implicit,
                    depth=depth + 1,
                    prefix=prefix,
                    out=item,
                    enc=enc,
                )
                pos = item_end
            if items is not None and item is not None:
                items.append(item)
            index += 1

    def encapsulated(self, pos: int, limit: int) -> tuple[tuple[ByteRange, ...], int]:
        """Walk encapsulated items (PS3.5 §A.4); return item values and the delimiter offset."""
        try:
            return encapsulated_items(self.buf, pos, limit)
        except InvalidDicom as exc:
            raise Unsupported from exc  # the pydicom path reports it


def walk_and_convert(
    buf: Buffer,
    size: int,
    start: int,
    *,
    bulk_threshold: int,
    max_depth: int,
    defer_size: int,
) -> WalkJson:
    """Walk an explicit VR little-endian data set and build its DICOM JSON in one pass.

    Args:
        buf: File contents (bytes or mmap).
        size: Number of valid bytes in ``buf``.
        start: Offset of the first data set element (after the File Meta Information).
        bulk_threshold: Binary values longer than this are bulk (PS3.18 §F.2.7).
        max_depth: Maximum sequence nesting depth (PS3.5 §7.5).
        defer_size: The ``defer_size`` the pydicom path reads with.

    Returns:
        The walk result (as :func:`dicomhub.dicom.offsets.walk_dataset`) and the metadata.

    Raises:
        Unsupported: If the data set needs the pydicom path (see the module docstring).
    """
    walker = _JsonWalker(
        buf, bulk_threshold=bulk_threshold, max_depth=max_depth, defer_size=defer_size
    )
    metadata: dict[str, Any] = {}
    if looks_explicit(buf, start, size) is False:
        raise Unsupported  # the data set is implicit VR despite the transfer syntax
    try:
        end = walker.dataset(
            start,
            size,
            delimited=False,
            implicit=False,
            depth=0,
            prefix="",
            out=metadata,
            enc=_DEFAULT_ENCODINGS,
        )
    except (struct.error, IndexError, ValueError, RecursionError) as exc:
        raise Unsupported from exc
    return WalkJson(WalkResult(walker.top, walker.bulk, end), metadata)
