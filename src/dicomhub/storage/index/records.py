"""Plain records read from the index (never the DB rows themselves outside this package)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dicomhub.dicom.model import ByteRange


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What retrieval needs to know about one stored instance."""

    pk: int
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    sha256: str
    number_of_frames: int | None
    frames_json: str
    bulk_json: str

    def frames(self) -> list[list[ByteRange]]:
        """The indexed byte ranges of every frame (empty when not indexable)."""
        return [[ByteRange(o, n) for o, n in frame] for frame in json.loads(self.frames_json)]

    def bulk(self) -> dict[str, ByteRange]:
        """The indexed byte ranges of bulk data values by bulk key."""
        raw: dict[str, list[int]] = json.loads(self.bulk_json)
        return {k: ByteRange(v[0], v[1]) for k, v in raw.items()}


def row_to_instance(row: Any) -> InstanceRecord:
    """Build an :class:`InstanceRecord` from a row selected with :data:`INSTANCE_COLUMNS`."""
    return InstanceRecord(*row)
