"""Value objects produced by the ingest parser (PS3.10 §7.1 Part-10 files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ByteRange", "ParsedInstance"]


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A contiguous run of bytes in a Part-10 file.

    Attributes:
        offset: Absolute offset of the first byte in the file.
        length: Number of bytes.
    """

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    """Everything ingest needs from one composite instance (PS3.10 §7.1, PS3.18 §F.2).

    Attributes:
        transfer_syntax_uid: Transfer Syntax UID (0002,0010) of the file.
        sop_class_uid: SOP Class UID (0008,0016).
        sop_instance_uid: SOP Instance UID (0008,0018).
        study_instance_uid: Study Instance UID (0020,000D).
        series_instance_uid: Series Instance UID (0020,000E).
        patient: Patient-level index columns.
        study: Study-level index columns.
        series: Series-level index columns.
        instance: Instance-level index columns.
        patient_json: DICOM JSON of the Patient-level attributes.
        study_json: DICOM JSON of the Study-level attributes.
        series_json: DICOM JSON of the Series-level attributes.
        metadata: DICOM JSON of the whole data set (group 0002 excluded) with bulk markers.
        frames: Per frame, the byte ranges holding that frame's pixel data; ``()`` if none or
            not indexable.
        bulk: Bulk-data key to byte range of the value in the file.
        encapsulated: Whether Pixel Data is encapsulated (PS3.5 §A.4).
        deflated: Whether the data set is deflated (PS3.5 §A.5); offsets are then not indexable.
    """

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient: dict[str, str | None]
    study: dict[str, str | None]
    series: dict[str, str | int | None]
    instance: dict[str, str | int | None]
    patient_json: dict[str, Any]
    study_json: dict[str, Any]
    series_json: dict[str, Any]
    metadata: dict[str, Any]
    frames: tuple[tuple[ByteRange, ...], ...]
    bulk: dict[str, ByteRange]
    encapsulated: bool
    deflated: bool
