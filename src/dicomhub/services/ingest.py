"""Ingest: the one path by which DICOM instances enter the archive.

STOW-RS, C-STORE, browser upload and ``dicomhub import`` all call :func:`store`. The order of
steps makes a crash at any moment leave either nothing visible or a complete instance:

1. parse the header and index frame/bulk offsets (no pixel data in memory);
2. validate (PS3.10 Part-10 file, UIDs per PS3.5 §9.1, study of the request path);
3. duplicate pre-check (identical content: idempotent success without a second write);
4. reserve the blob key as *pending* (committed);
5. write the blob durably (fsync file + directory);
6. one transaction: make the instance visible (or resolve a concurrent duplicate), release the
   reservation, append to the change feed;
7. acknowledge.

A crash between 4 and 6 leaves a pending row and maybe a blob: the garbage collector and
``dicomhub fsck --repair`` remove both. Nothing is visible until step 6 commits.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from dicomhub.config import DuplicatePolicy
from dicomhub.dicom.model import ParsedInstance
from dicomhub.dicom.parse import parse_instance
from dicomhub.errors import Conflict, StudyMismatch
from dicomhub.services.archive import Archive
from dicomhub.services.spool import Spool
from dicomhub.storage.blobs.keys import new_key
from dicomhub.storage.index import jobs
from dicomhub.storage.index import store as index

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stored:
    """A successfully stored (or idempotently re-stored) instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    outcome: str  # "stored" | "duplicate" | "overwritten"


def store(
    archive: Archive,
    tenant_id: int,
    spool: Spool,
    sha256: str,
    *,
    expected_study: str | None = None,
) -> Stored:
    """Store the finished spool as one instance; consumes (moves or deletes) the spool file.

    Raises:
        InvalidDicom: the file is not an acceptable DICOM instance.
        StudyMismatch: the instance does not belong to ``expected_study``.
        Conflict: the SOP Instance UID is stored with other content and the policy rejects.
    """
    try:
        parsed = _parse(archive, spool.path)
        if expected_study is not None and parsed.study_instance_uid != expected_study:
            raise StudyMismatch(
                "Study Instance UID of the instance does not match the study in the request",
                **_uids(parsed),
            )
        return _store_parsed(archive, tenant_id, spool, sha256, parsed)
    finally:
        spool.discard()


def _uids(p: ParsedInstance) -> dict[str, str]:
    return {"sop_class_uid": p.sop_class_uid, "sop_instance_uid": p.sop_instance_uid}


def _parse(archive: Archive, path: Path) -> ParsedInstance:
    return parse_instance(path, bulk_threshold=archive.settings.bulk_threshold)


def _store_parsed(
    archive: Archive, tenant_id: int, spool: Spool, sha256: str, parsed: ParsedInstance
) -> Stored:
    overwrite = archive.settings.duplicate_policy is DuplicatePolicy.OVERWRITE

    def result(outcome: str) -> Stored:
        return Stored(
            parsed.sop_class_uid,
            parsed.sop_instance_uid,
            parsed.study_instance_uid,
            parsed.series_instance_uid,
            outcome,
        )

    with archive.db.read() as conn:
        existing = index.find_instance_sha(conn, tenant_id, parsed.sop_instance_uid)
    if existing is not None:
        if existing[1] == sha256:
            return result("duplicate")
        if not overwrite:
            raise _conflict(parsed)

    metadata_text = json.dumps(parsed.metadata, separators=(",", ":"), ensure_ascii=False)
    key = new_key()
    with archive.db.write() as conn:
        index.reserve_pending(conn, tenant_id, key)
    try:
        archive.blobs.put_file(key, spool.path)
    except BaseException:
        _abandon(archive, key)
        raise
    # If this transaction fails, the pending row lets the garbage collector remove the blob.
    with archive.db.write() as conn:
        res = index.commit_instance(
            conn,
            tenant_id,
            parsed,
            blob_key=key,
            size=spool.size,
            sha256=sha256,
            metadata_text=metadata_text,
            overwrite=overwrite,
        )
        if res.outcome == "overwritten" and res.obsolete_blob:
            jobs.enqueue(conn, "delete_blobs", {"keys": [res.obsolete_blob]})
    if res.outcome in ("duplicate", "conflict") and res.obsolete_blob:
        archive.blobs.delete(res.obsolete_blob)
    if res.outcome == "conflict":
        raise _conflict(parsed)
    return result(res.outcome)


def _conflict(parsed: ParsedInstance) -> Conflict:
    return Conflict(
        "an instance with this SOP Instance UID is already stored with different content",
        **_uids(parsed),
    )


def _abandon(archive: Archive, key: str) -> None:
    archive.blobs.delete(key)
    try:
        with archive.db.write() as conn:
            index.release_pending(conn, key)
    except Exception:  # the stale pending row is collected later
        log.exception("could not release pending blob reservation")
