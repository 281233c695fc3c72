"""C-FIND identifiers <-> the shared query model (PS3.4 C.4.1.1.3, C.6.1, C.6.2).

A C-FIND identifier is translated into the same :class:`~dicomhub.domain.query.Query` that
QIDO-RS builds, through the same parser (``qido_params.parse_query``: every element becomes an
``{attributeID}={value}`` key), so both transports match identically: one query model, one
matcher set, one SQL translation. Results (DICOM JSON from ``services.search``) are turned back
into identifiers carrying exactly the requested keys (PS3.4 C.4.1.1.3.2), zero-length when the
archive holds no value.
"""

from __future__ import annotations

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

__all__ = ["FindRequest", "key_text", "parse_identifier", "query_level", "result_identifier"]

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
