"""The DICOM JSON Model (PS3.18 §F.2) of a pydicom data set, with bulk-data markers.

Binary values (OB OD OF OL OV OW UN) longer than the bulk threshold, and Pixel Data always,
become ``{"vr": VR, "BulkDataURI": MARKER + key}`` (PS3.18 §F.2.7) where ``key`` is the
element's path: ``TTTTTTTT`` at top level, ``SSSSSSSS/i/TTTTTTTT`` inside item ``i`` of
sequence ``SSSSSSSS`` (nesting repeats). The serialized metadata is stored once; at response
time :func:`render_bulk_markers` turns the markers into real URIs.

Every element is converted on its own: an element pydicom cannot decode (invalid IS/DS, a bad
character set, ...) falls back to its raw text and never fails the whole data set.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Container, Sequence
from typing import Any, Final

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import raw_element_vr
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName
from pydicom.values import convert_value

from dicomhub.dicom.offsets import BINARY_VRS, PIXEL_DATA_TAGS, implicit_vr

__all__ = [
    "MARKER",
    "bulk_key",
    "convert_raw_element",
    "dataset_to_json",
    "render_bulk_markers",
    "simple_attr",
]

#: Prefix of a BulkDataURI placeholder; a NUL cannot occur in our text values (we strip them).
MARKER: Final = "\u0000bulk/"
# How json.dumps writes MARKER: control characters are always escaped as \\u00XX.
_MARKER_JSON: Final = "\\u0000bulk/"
# The marker, not preceded by an odd number of backslashes (which would make it literal text).
_MARKER_RE: Final = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000bulk/")

_INT_VRS: Final = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS: Final = frozenset({"DS", "FL", "FD"})
_BINARY_INT_VRS: Final = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
_BINARY_FLOAT_VRS: Final = frozenset({"FL", "FD"})
_MAX_DEPTH: Final = 64


def bulk_key(prefix: str, tag: int) -> str:
    """Return the bulk key of ``tag`` in the data set whose key prefix is ``prefix``."""
    return f"{prefix}{tag:08X}"


def render_bulk_markers(json_text: str, base_url: str) -> str:
    r"""Replace the serialized bulk markers with ``base_url + "/bulkdata/"`` (PS3.18 §F.2.7).

    Args:
        json_text: Metadata serialized with :func:`json.dumps` (markers appear as
            ``\u0000bulk/``).
        base_url: The instance URL, e.g. ``https://h/dicomweb/studies/1/series/2/instances/3``.

    Returns:
        The JSON text with every ``BulkDataURI`` pointing below ``base_url``.
    """
    prefix = json.dumps(base_url.rstrip("/") + "/bulkdata/")[1:-1]
    if _MARKER_JSON not in json_text:
        return json_text
    return _MARKER_RE.sub(lambda m: m.group(1) + prefix, json_text)


def _number(value: Any, vr: str) -> Any:
    """Return a JSON number for an IS/DS/binary-number value, or null if it is not one.

    PS3.18 §F.2.3 encodes IS and DS as JSON numbers; a value that is not a number (real files
    carry e.g. ``1A``) becomes null, as strict DICOM JSON readers reject strings there.
    """
    if value is None or value == "":
        return None
    if vr in _INT_VRS:
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except (TypeError, ValueError, OverflowError):
                pass
            return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return f


def _clean(text: str) -> str:
    """Strip NUL characters (padding in UI; never meaningful text, and used by MARKER)."""
    return text.replace("\x00", "") if "\x00" in text else text


def _pn(value: Any) -> dict[str, str]:
    if isinstance(value, PersonName):
        comps: tuple[str, ...] = tuple(value.components)
    else:
        comps = tuple(_clean(str(value)).split("="))
    out: dict[str, str] = {}
    for name, comp in zip(("Alphabetic", "Ideographic", "Phonetic"), comps, strict=False):
        comp = _clean(comp)
        if comp:
            out[name] = comp
    return out


def _values(value: Any) -> list[Any]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _raw_fallback(raw: RawDataElement | DataElement, vr: str) -> dict[str, Any]:
    """JSON of an element pydicom could not convert: its bytes as text (or InlineBinary)."""
    value = raw.value
    if value is None or value == b"" or value == "":
        return {"vr": vr}
    if vr in BINARY_VRS:
        data = value if isinstance(value, bytes) else str(value).encode("latin-1", "replace")
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    parts = [_clean(p).strip(" ") for p in text.split("\\")]
    if vr == "PN":
        return {"vr": vr, "Value": [_pn(p) for p in parts]}
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return {"vr": vr, "Value": [_number(p, vr) for p in parts]}
    return {"vr": vr, "Value": [p or None for p in parts]}


def simple_attr(vr: str, value: Any) -> dict[str, Any]:
    """JSON of a value converted by pydicom, not binary nor a sequence (PS3.18 §F.2.3)."""
    if value is None or value == "" or value == b"":
        return {"vr": vr}
    values = _values(value)
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [_pn(v) if v not in (None, "") else {} for v in values]}
    if vr == "AT":
        return {"vr": vr, "Value": [f"{int(v):08X}" for v in values]}
    if vr in _BINARY_INT_VRS:
        return {"vr": vr, "Value": [int(v) for v in values]}
    if vr in _BINARY_FLOAT_VRS:
        isfinite = math.isfinite
        return {
            "vr": vr,
            "Value": [float(v) if isfinite(v) else _number(v, vr) for v in values],
        }
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return {"vr": vr, "Value": [_number(v, vr) for v in values]}
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        text = _clean(str(v))
        out.append(text if text != "" else None)
    if all(v is None for v in out):
        return {"vr": vr}
    return {"vr": vr, "Value": out}


def convert_raw_element(
    tag: int, vr: str, value: bytes, value_tell: int, encodings: Sequence[str]
) -> dict[str, Any]:
    """JSON of one explicit-VR little-endian element value, converted exactly as pydicom does.

    This is the per-element path of :func:`dataset_to_json` for a raw (not deferred) value of
    a known, non-binary, non-sequence VR (PS3.5 §6.2): :func:`pydicom.values.convert_value`,
    then the JSON value rules, with the raw-text fallback for values pydicom rejects.

    Args:
        tag: The element tag.
        vr: The element's VR as encoded.
        value: The value bytes (padding included).
        value_tell: Offset of the value in the data set (informational, as in pydicom).
        encodings: Python codecs of the data set's Specific Character Set (0008,0005).

    Returns:
        The PS3.18 §F.2.2 attribute object.
    """
    if not value:
        return {"vr": vr}
    raw = RawDataElement(BaseTag(tag), vr, len(value), value, value_tell, False, True)
    try:
        return simple_attr(vr, convert_value(vr, raw, list(encodings)))
    except Exception:
        return _raw_fallback(raw, vr)


class _Converter:
    __slots__ = ("bulk_keys", "bulk_threshold", "bulk_uri")

    def __init__(
        self,
        bulk_uri: Callable[[str], str] | None,
        bulk_threshold: int,
        bulk_keys: Container[str] | None,
    ) -> None:
        self.bulk_uri = bulk_uri
        self.bulk_threshold = bulk_threshold
        self.bulk_keys = bulk_keys

    def uri(self, key: str) -> str:
        return self.bulk_uri(key) if self.bulk_uri is not None else MARKER + key

    def dataset(self, ds: Dataset, prefix: str, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise RecursionError("DICOM JSON nesting too deep")
        try:
            encoding = ds.original_character_set or ds._character_set
        except Exception:
            encoding = "iso8859"
        out: dict[str, Any] = {}
        for base_tag in sorted(ds.keys()):
            tag = int(base_tag)
            if tag >> 16 == 0x0002:
                continue  # File Meta Information is never part of the data set (PS3.10 §7.1)
            out[f"{tag:08X}"] = self.element(ds, tag, prefix, depth, encoding)
        return out

    def bulk_or_inline(
        self, vr: str, key: str, value: Any, length: int, tag: int
    ) -> dict[str, Any]:
        if (tag in PIXEL_DATA_TAGS or length > self.bulk_threshold) and (
            self.bulk_keys is None or key in self.bulk_keys
        ):
            return {"vr": vr, "BulkDataURI": self.uri(key)}
        if value is None or length == 0:
            return {"vr": vr}
        if not isinstance(value, bytes | bytearray):
            return {"vr": vr}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}

    def element(
        self, ds: Dataset, tag: int, prefix: str, depth: int, encoding: Any
    ) -> dict[str, Any]:
        key = f"{prefix}{tag:08X}"
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            vr = raw.VR if raw.VR and raw.VR != "UN" else _raw_vr(raw, ds, encoding)
            if vr in BINARY_VRS or tag in PIXEL_DATA_TAGS:
                if raw.value is None and raw.length > 0:  # deferred: never read bulk values
                    if self.bulk_keys is None or key in self.bulk_keys:
                        return {"vr": vr, "BulkDataURI": self.uri(key)}
                else:
                    return self.bulk_or_inline(vr, key, raw.value, raw.length, tag)
            elif vr != "SQ" and " or " not in vr and raw.value is not None:
                # Fast path: convert the value without materialising a DataElement.
                if raw.length == 0:
                    return {"vr": vr}
                try:
                    value = convert_value(vr, raw, encoding)
                    return self.simple(vr, value)
                except Exception:
                    return _raw_fallback(raw, vr)
        try:
            elem = ds[tag]
        except Exception:
            vr = (raw.VR if raw is not None else None) or implicit_vr(tag)
            return _raw_fallback(raw, vr) if raw is not None else {"vr": vr}
        vr = str(elem.VR)
        if " or " in vr:
            choices = vr.split(" or ")
            vr = "OW" if "OW" in choices else choices[0]
        try:
            return self.leaf(elem, vr, key, depth, tag)
        except RecursionError:
            raise
        except Exception:
            return _raw_fallback(raw if isinstance(raw, RawDataElement) else elem, vr)

    def leaf(self, elem: DataElement, vr: str, key: str, depth: int, tag: int) -> dict[str, Any]:
        value = elem.value
        if vr in BINARY_VRS or tag in PIXEL_DATA_TAGS:
            length = len(value) if isinstance(value, bytes | bytearray) else 0
            return self.bulk_or_inline(vr, key, value, length, tag)
        if vr == "SQ":
            items = [
                self.dataset(item, f"{key}/{i}/", depth + 1) for i, item in enumerate(value or ())
            ]
            return {"vr": vr, "Value": items} if items else {"vr": vr}
        return self.simple(vr, value)

    def simple(self, vr: str, value: Any) -> dict[str, Any]:
        """JSON of a converted non-binary, non-sequence value (PS3.18 §F.2.3)."""
        return simple_attr(vr, value)


def _raw_vr(raw: RawDataElement, ds: Dataset, encoding: Any) -> str:
    """The VR of an implicit-VR raw element, as pydicom would assign it (PS3.5 §6.2.2)."""
    data: dict[str, Any] = {}
    try:
        raw_element_vr(raw, data, encoding=encoding, ds=ds)
    except Exception:
        return implicit_vr(int(raw.tag))
    return str(data.get("VR") or "UN")


def dataset_to_json(
    ds: Dataset,
    *,
    bulk_uri: Callable[[str], str] | None = None,
    bulk_threshold: int = 1024,
    bulk_keys: Container[str] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Return the DICOM JSON Model of ``ds`` (PS3.18 §F.2), group 0002 excluded.

    Args:
        ds: The data set (typically read with ``stop_before_pixels`` and ``defer_size``).
        bulk_uri: Maps a bulk key to its BulkDataURI; ``None`` writes ``MARKER + key``.
        bulk_threshold: Binary values longer than this many bytes become bulk references;
            shorter ones are ``InlineBinary`` (base64). Pixel Data is always bulk.
        bulk_keys: If given, only these keys may become bulk references (the others are
            inlined), so every reference is guaranteed to resolve.
        prefix: Key prefix of ``ds`` when it is an item (``"SSSSSSSS/i/"``).

    Returns:
        A dict from 8-digit uppercase hex tags to PS3.18 §F.2.2 attribute objects.

    Raises:
        RecursionError: If items are nested absurdly deep (callers validate depth first).
    """
    return _Converter(bulk_uri, bulk_threshold, bulk_keys).dataset(ds, prefix, 0)
