"""THE error -> DIMSE status table of the DIMSE edge (PS3.7 Annex C, PS3.4 Annexes B and C).

Every failure response carries an Error Comment (0000,0902; PS3.7 Annex E: VR LO, at most
64 characters) without PHI: the domain reasons name attributes and UIDs, never patient data.

C-STORE (PS3.4 B.2.3):

=====================  ======  ===============================================================
domain error           status  meaning
=====================  ======  ===============================================================
InvalidDicom           C000    Error: Cannot understand (malformed data set, bad/missing UIDs)
StudyMismatch          C000    (an InvalidDicom)
Conflict               C001    Error: Cannot understand, sub-code 01: the SOP Instance UID is
                               stored with other content (duplicate policy ``reject``).
                               PS3.4 B.2.3 has no "duplicate" status for C-STORE and 0111
                               (Duplicate SOP Instance) is defined for N-CREATE only, so this
                               is an implementation-specific Cxxx code with a comment.
PayloadTooLarge        A700    Refused: Out of Resources (beyond the instance size bound)
Unavailable            A700    Refused: Out of Resources (index or blob store down; retry)
InvalidInput           A900    Error: Data Set does not match SOP Class
NotFound, other        0110    Processing failure (PS3.7 Annex C.5)
=====================  ======  ===============================================================

C-FIND / C-MOVE / C-GET (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4): a malformed identifier
(InvalidInput, InvalidDicom) is A900 "Identifier does not match SOP Class"; Unavailable is
A700 (C-FIND) / A701 (C-MOVE, C-GET: "Out of resources - unable to calculate number of
matches"); anything else is C000-family "Unable to process" (C-FIND) or 0110.

Policy refusals (not domain errors): 0124 Refused: Not Authorized (PS3.7 Annex C.5: the calling
AE lacks the right), A801 Move Destination unknown (PS3.4 C.4.2.1.5).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Final

from pydicom.dataset import Dataset

from dicomhub import errors

log = logging.getLogger(__name__)

SUCCESS: Final = 0x0000
PENDING: Final = 0xFF00
CANCEL: Final = 0xFE00
PROCESSING_FAILURE: Final = 0x0110
NOT_AUTHORIZED: Final = 0x0124
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
OUT_OF_RESOURCES: Final = 0xA700
OUT_OF_RESOURCES_MATCHES: Final = 0xA701
IDENTIFIER_MISMATCH: Final = 0xA900
DATASET_MISMATCH: Final = 0xA900
MOVE_DESTINATION_UNKNOWN: Final = 0xA801
CANNOT_UNDERSTAND: Final = 0xC000
DUPLICATE_CONFLICT: Final = 0xC001
UNABLE_TO_PROCESS: Final = 0xC000

#: Longest Error Comment (VR LO, PS3.5 §6.2).
MAX_COMMENT: Final = 64


class Service(StrEnum):
    """The DIMSE-C service whose response the status goes into."""

    STORE = "C-STORE"
    FIND = "C-FIND"
    MOVE = "C-MOVE"
    GET = "C-GET"


_STORE: Final[dict[type[errors.DicomhubError], int]] = {
    errors.InvalidDicom: CANNOT_UNDERSTAND,
    errors.Conflict: DUPLICATE_CONFLICT,
    errors.PayloadTooLarge: OUT_OF_RESOURCES,
    errors.Unavailable: OUT_OF_RESOURCES,
    errors.InvalidInput: DATASET_MISMATCH,
}
_QUERY: Final[dict[type[errors.DicomhubError], int]] = {
    errors.InvalidInput: IDENTIFIER_MISMATCH,
    errors.InvalidDicom: IDENTIFIER_MISMATCH,
    errors.Unavailable: OUT_OF_RESOURCES,
}
_RETRIEVE: Final[dict[type[errors.DicomhubError], int]] = {
    errors.InvalidInput: IDENTIFIER_MISMATCH,
    errors.InvalidDicom: IDENTIFIER_MISMATCH,
    errors.Unavailable: OUT_OF_RESOURCES_MATCHES,
}
_TABLES: Final = {
    Service.STORE: (_STORE, PROCESSING_FAILURE),
    Service.FIND: (_QUERY, UNABLE_TO_PROCESS),
    Service.MOVE: (_RETRIEVE, PROCESSING_FAILURE),
    Service.GET: (_RETRIEVE, PROCESSING_FAILURE),
}


def status_code(service: Service, exc: BaseException) -> int:
    """The DIMSE status for ``exc`` raised while serving ``service`` (most specific class wins)."""
    table, fallback = _TABLES[service]
    if isinstance(exc, errors.DicomhubError):
        for cls in type(exc).__mro__:
            if cls in table:
                return table[cls]
    return fallback


def comment(text: str) -> str:
    """``text`` fit for Error Comment: printable ASCII, backslash-free, at most 64 characters."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c != "\\" else "?" for c in text)
    return clean if len(clean) <= MAX_COMMENT else clean[: MAX_COMMENT - 3] + "..."


def failure(status: int, text: str) -> Dataset:
    """A status data set: Status (0000,0900) and Error Comment (0000,0902)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment(text)
    return ds


def from_error(service: Service, exc: BaseException) -> Dataset:
    """The failure status data set for ``exc``; unexpected errors are logged, not described."""
    code = status_code(service, exc)
    if isinstance(exc, errors.DicomhubError) and not isinstance(exc, errors.IntegrityError):
        return failure(code, exc.reason)
    log.error("%s failed", service.value, exc_info=exc)
    return failure(code, "internal error")
