"""C-FIND identifiers <-> the shared query model (PS3.4 C.4.1.1.3, C.6.1, C.6.2).

A C-FIND identifier is translated into the same :class:`~dicomhub.domain.query.Query` that
QIDO-RS builds, through the same parser (``qido_params.parse_query``: every element becomes an
``{attributeID}={value}`` key), so both transports match identically: one query model, one
matcher set, one SQL translation. Results (DICOM JSON from ``services.search``) are turned back
into identifiers carrying exactly the requested keys (PS3.4 C.4.1.1.3.2), zero-length when the
archive holds no value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomhub.domain.attributes import resolve
from dicomhub.domain.query import Level, Query
from dicomhub.errors import InvalidInput
from dicomhub.web.dicomweb.qido_params import parse_query

__all__ = [
    "FindRequest",
    "encode_result",
    "key_text",
    "parse_identifier",
    "query_level",
    "result_identifier",
]

PATIENT_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"

_QR_LEVEL: Final = 0x00080052
_CHARSET: Final = 0x00080005
_RETRIEVE_AE: Final = 0x00080054
_CONTROL: Final = frozenset({_QR_LEVEL, _CHARSET, _RETRIEVE_AE})
_LEVELS: Final = {lv.value: lv for lv in Level}


@dataclass(frozen=True, slots=True)
class FindRequest:
    """A parsed C-FIND request.

    Attributes:
        query: The shared query model.
        requested: Tags (``GGGGEEEE``) of the identifier's keys, in order: what each response
            identifier carries.
        retrieve_ae: Retrieve AE Title (0008,0054) was requested.
        charset: Specific Character Set (0008,0005) was requested.
    """

    query: Query
    requested: tuple[str, ...]
    retrieve_ae: bool
    charset: bool


def query_level(identifier: Dataset, model: str | None = None) -> Level:
    """The Query/Retrieve Level (0008,0052) of an identifier (PS3.4 C.6.1.1.1, C.6.2.1.1).

    Raises:
        InvalidInput: missing or unknown level, or PATIENT in the Study Root model.
    """
    value = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
    level = _LEVELS.get(value)
    if level is None:
        raise InvalidInput("missing or unknown Query/Retrieve Level (0008,0052)")
    if (
        level is Level.PATIENT
        and model is not None
        and model.startswith("1.2.840.10008.5.1.4.1.2.2")
    ):
        raise InvalidInput("the Study Root model has no PATIENT level (PS3.4 C.6.2)")
    return level


def parse_identifier(identifier: Dataset, model: str, max_results: int) -> FindRequest:
    """Translate a C-FIND identifier into the shared query model.

    Args:
        identifier: The request's Identifier data set.
        model: Affected SOP Class UID (Patient Root or Study Root FIND).
        max_results: Most matches returned.

    Raises:
        InvalidInput: bad level, unknown attribute, malformed key value (PS3.4 C.2.2.2).
    """
    level = query_level(identifier, model)
    params: list[tuple[str, str]] = []
    requested: list[str] = []
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _CONTROL or elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0:
            continue
        key = f"{tag:08X}"
        requested.append(key)
        params.append((key, key_text(elem)))
    query = parse_query(params, level=level, default_limit=max_results, max_limit=max_results)
    return FindRequest(
        query=query,
        requested=tuple(requested),
        retrieve_ae=_RETRIEVE_AE in identifier,
        charset=_CHARSET in identifier,
    )


def key_text(elem: DataElement) -> str:
    """A key's value as QIDO-RS would carry it: backslash-joined values, ``""`` if universal."""
    if elem.VR == "SQ" or elem.value is None or isinstance(elem.value, bytes | bytearray):
        return ""
    if isinstance(elem.value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in elem.value)
    return str(elem.value)


def result_identifier(item: dict[str, Any], request: FindRequest, ae_title: str) -> Dataset:
    """A pending response identifier: the requested keys of one search result."""
    subset: dict[str, Any] = {}
    for tag in request.requested:
        value = item.get(tag)
        if not isinstance(value, dict) or "BulkDataURI" in value:
            attr = resolve(tag)
            value = {"vr": attr.vr if attr is not None else "UN"}
        subset[tag] = value
    ds = Dataset.from_json(subset)
    ds.QueryRetrieveLevel = request.query.level.value
    if request.charset or not _ascii(subset.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"  # values come from UTF-8 DICOM JSON
    if request.retrieve_ae:
        ds.RetrieveAETitle = ae_title
    return ds


def _ascii(values: Iterable[Any]) -> bool:
    return all(str(v).isascii() for v in values)


class _Unsupported(Exception):
    """A value the direct encoder leaves to pydicom (sequences with items, AT, huge values)."""


_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UR", "UT", "UN"})
_BINARY: Final = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l", "FL": "<f", "FD": "<d"}
_EXTRA_KEYS: Final = (_QR_LEVEL, _CHARSET, _RETRIEVE_AE)


def encode_result(
    item: dict[str, Any], request: FindRequest, ae_title: str, *, implicit: bool
) -> bytes:
    """The pending response identifier of one search result, encoded (Little Endian).

    The same identifier as :func:`result_identifier` (the requested keys, Query/Retrieve Level,
    Specific Character Set and Retrieve AE Title as requested), written straight from the
    DICOM JSON (PS3.18 §F.2) to Implicit or Explicit VR Little Endian (PS3.5 §7.1), without
    building a pydicom data set: C-FIND answers cost a fraction of the decode/encode round trip.
    Values it does not handle (sequences with items, AT) fall back to pydicom.
    """
    try:
        return _encode_direct(item, request, ae_title, implicit)
    except _Unsupported:
        from pynetdicom.dsutils import encode

        raw = encode(result_identifier(item, request, ae_title), implicit, True)
        if raw is None:
            raise ValueError("identifier could not be encoded") from None
        return raw


def _encode_direct(
    item: dict[str, Any], request: FindRequest, ae_title: str, implicit: bool
) -> bytes:
    elements: dict[int, tuple[str, bytes]] = {}
    utf8 = request.charset
    for key in request.requested:
        value = item.get(key)
        if not isinstance(value, dict) or "BulkDataURI" in value or "InlineBinary" in value:
            attr = resolve(key)
            elements[int(key, 16)] = (attr.vr if attr is not None else "UN", b"")
            continue
        vr = str(value.get("vr", "UN"))
        raw, text_utf8 = _value_bytes(vr, value.get("Value"))
        utf8 = utf8 or text_utf8
        elements[int(key, 16)] = (vr, raw)
    elements[_QR_LEVEL] = ("CS", _pad(request.query.level.value.encode("ascii"), b" "))
    if utf8:
        elements[_CHARSET] = ("CS", _pad(b"ISO_IR 192", b" "))
    if request.retrieve_ae:
        elements[_RETRIEVE_AE] = ("AE", _pad(ae_title.encode("ascii"), b" "))
    out = bytearray()
    for tag in sorted(elements):
        vr, raw = elements[tag]
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if implicit:
            out += head + struct.pack("<L", len(raw))
        elif vr in _LONG_VRS:
            out += head + vr.encode("ascii") + b"\x00\x00" + struct.pack("<L", len(raw))
        else:
            if len(raw) > 0xFFFF:
                raise _Unsupported(vr)
            out += head + vr.encode("ascii") + struct.pack("<H", len(raw))
        out += raw
    return bytes(out)


def _value_bytes(vr: str, values: Any) -> tuple[bytes, bool]:
    """(encoded value, needs UTF-8) of a DICOM JSON ``Value`` array."""
    if not values:
        return b"", False
    if vr == "SQ" or vr == "AT":
        raise _Unsupported(vr)
    if vr in _BINARY:
        fmt = _BINARY[vr]
        return b"".join(struct.pack(fmt, v) for v in values), False
    if vr == "PN":
        texts = [_person_name(v) for v in values]
    elif vr == "DS":
        texts = [_decimal_string(v) for v in values]
    elif vr == "IS":
        texts = [str(int(v)) if isinstance(v, int | float) else str(v) for v in values]
    elif vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        raise _Unsupported(vr)
    else:
        texts = ["" if v is None else str(v) for v in values]
    text = "\\".join(texts)
    utf8 = not text.isascii()
    raw = text.encode("utf-8")
    return _pad(raw, b"\x00" if vr == "UI" else b" "), utf8


def _person_name(value: Any) -> str:
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    groups = [str(value.get(k, "") or "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


def _decimal_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    if len(text) > 16:
        from pydicom.valuerep import format_number_as_ds

        text = format_number_as_ds(float(value))
    return text


def _pad(raw: bytes, pad: bytes) -> bytes:
    return raw + pad if len(raw) % 2 else raw
