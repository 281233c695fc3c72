"""Ingest: the one path by which DICOM instances enter the archive.

STOW-RS, C-STORE, browser upload and ``dicomhub import`` all go through :func:`prepare` and
:func:`commit` (or :func:`store` for a single instance). The order of steps makes a crash at any
moment leave either nothing visible or a complete instance:

1. ``prepare`` (per instance, in parallel): parse the header and index frame/bulk offsets (no
   pixel data in memory); validate (PS3.10 Part-10 file, UIDs per PS3.5 §9.1, the study of the
   request path); flush the spooled file to disk when the blob store will keep this very file
   (the filesystem store renames it; S3 uploads a copy and answers for its durability).
2. ``commit`` (per batch): one query pre-checks duplicates (identical content is an idempotent
   success without a second write, so its metadata is never serialized); one transaction
   reserves the blob keys as *pending*; the blobs are moved into the store durably (one
   directory fsync for the batch); one transaction makes the instances visible (resolving any
   concurrent duplicate), releases the reservations and appends to the change feed. The
   per-batch statements are driver SQL (see :mod:`dicomhub.storage.index.store`).
3. The caller acknowledges.

A crash between the two transactions leaves pending rows and maybe blobs: the garbage collector
and ``dicomhub fsck --repair`` remove both. Nothing is visible until the last transaction
commits. Batching is group commit: a STOW-RS request of 10 instances costs two index commits,
not twenty.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from sqlalchemy import Connection

from dicomhub.config import DuplicatePolicy
from dicomhub.dicom.model import ParsedInstance
from dicomhub.dicom.parse import parse_instance
from dicomhub.errors import Conflict, DicomhubError, InvalidDicom, StudyMismatch
from dicomhub.services.archive import Archive
from dicomhub.services.spool import Spool, sha256_of
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore, fsync_file
from dicomhub.storage.blobs.keys import new_keys
from dicomhub.storage.index import jobs
from dicomhub.storage.index import store as index

log = logging.getLogger(__name__)

#: The stored metadata text: compact, UTF-8 as is (one encoder, not one per call).
_json_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Stored:
    """A successfully stored (or idempotently re-stored) instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    outcome: str  # "stored" | "duplicate" | "overwritten"


@dataclass(slots=True)
class Prepared:
    """A parsed, validated instance whose spooled file is on disk, ready to commit."""

    spool: Spool
    sha256: str
    parsed: ParsedInstance
    _metadata_text: str | None = None

    @property
    def metadata_text(self) -> str:
        """The DICOM JSON text to store, serialized when first needed (never for duplicates)."""
        if self._metadata_text is None:
            self._metadata_text = _json_text(self.parsed.metadata)
        return self._metadata_text

    def stored(self, outcome: str) -> Stored:
        """The success record for this instance."""
        p = self.parsed
        return Stored(
            p.sop_class_uid,
            p.sop_instance_uid,
            p.study_instance_uid,
            p.series_instance_uid,
            outcome,
        )


def _uids(p: ParsedInstance) -> dict[str, str]:
    return {"sop_class_uid": p.sop_class_uid, "sop_instance_uid": p.sop_instance_uid}


def prepare(
    archive: Archive, spool: Spool, sha256: str | None, *, expected_study: str | None = None
) -> Prepared:
    """Parse and validate a finished spool; on any error the spool is discarded.

    Raises:
        InvalidDicom: the file is not an acceptable DICOM instance.
        StudyMismatch: the instance does not belong to ``expected_study``.
    """
    try:
        if sha256 is None:
            sha256 = sha256_of(spool.path)
        parsed = parse_instance(spool.path, bulk_threshold=archive.settings.bulk_threshold)
        if expected_study is not None and parsed.study_instance_uid != expected_study:
            raise StudyMismatch(
                "Study Instance UID of the instance does not match the study in the request",
                **_uids(parsed),
            )
        if isinstance(archive.blobs, FilesystemBlobStore):
            # Flush now, in parallel with other work; the blob store's own fsync is then cheap.
            # Other stores copy the bytes elsewhere: their durability is theirs, not the spool's.
            fsync_file(spool.path)
    except BaseException:
        spool.discard()
        raise
    return Prepared(spool, sha256, parsed)


class Reservations:
    """Blob keys reserved one store ahead, for a caller that stores one instance at a time.

    A C-STORE association commits one instance per request, so the reservation transaction of
    :func:`commit` would be half of its index commits. With ``ahead``, the transaction that
    makes instance N visible also reserves the key of instance N+1, and the next store skips
    its own reservation. The keys are pending rows like any other: after a crash the collector
    removes them (their blobs never existed); :meth:`release` gives them back when the caller
    is done. Keys older than half the pending timeout are not used (the collector may be about
    to take them).
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.reserved_at = 0.0

    def take(self, archive: Archive, count: int) -> list[str] | None:
        """``count`` reserved keys, or None when not enough fresh ones are held."""
        fresh = time.time() - self.reserved_at < archive.settings.pending_timeout_s / 2
        if not fresh or len(self.keys) < count:
            return None
        taken, self.keys = self.keys[:count], self.keys[count:]
        return taken

    def release(self, archive: Archive) -> None:
        """Give back the keys still held (best effort: the collector takes them otherwise)."""
        keys, self.keys = self.keys, []
        if not keys:
            return
        try:
            with archive.db.write() as conn:
                for key in keys:
                    index.release_pending(conn, key)
        except Exception:
            log.exception("could not release reserved blob keys; left to the collector")


def commit(
    archive: Archive,
    tenant_id: int,
    items: list[Prepared],
    *,
    ahead: Reservations | None = None,
) -> list[Stored | DicomhubError]:
    """Store a batch of prepared instances; one outcome per item, in order.

    Consumes every spool. Errors of one instance (a conflicting duplicate) do not affect the
    others; an infrastructure error (index or blob store down) propagates. ``ahead`` keeps
    blob keys reserved one batch ahead (see :class:`Reservations`).
    """
    overwrite = archive.settings.duplicate_policy is DuplicatePolicy.OVERWRITE
    results: list[Stored | DicomhubError | None] = [None] * len(items)
    try:
        with archive.db.read() as conn:
            known = index.find_instances_sha(
                conn, tenant_id, [it.parsed.sop_instance_uid for it in items]
            )
        todo: list[int] = []
        for i, it in enumerate(items):
            old = known.get(it.parsed.sop_instance_uid)
            if old is None or (old != it.sha256 and overwrite):
                todo.append(i)
            elif old == it.sha256:
                results[i] = it.stored("duplicate")
            else:
                results[i] = _conflict(it.parsed)
        if todo:
            _write(archive, tenant_id, [items[i] for i in todo], todo, results, overwrite, ahead)
    finally:
        for it in items:
            it.spool.discard()
    return [r if r is not None else _conflict(items[i].parsed) for i, r in enumerate(results)]


def _write(
    archive: Archive,
    tenant_id: int,
    batch: list[Prepared],
    positions: list[int],
    results: list[Stored | DicomhubError | None],
    overwrite: bool,
    ahead: Reservations | None = None,
) -> None:
    keys = ahead.take(archive, len(batch)) if ahead is not None else None
    if keys is None:
        keys = new_keys(len(batch))
        with archive.db.write() as conn:
            index.reserve_pending_many(conn, tenant_id, keys)
    next_keys = new_keys(len(batch)) if ahead is not None else []
    try:
        archive.blobs.put_files([(k, it.spool.path) for k, it in zip(keys, batch, strict=True)])
    except BaseException:
        _abandon(archive, keys)
        raise
    items = [
        index.NewInstance(it.parsed, key, it.spool.size, it.sha256, it.metadata_text)
        for key, it in zip(keys, batch, strict=True)
    ]

    def make_visible(conn: Connection) -> list[index.CommitResult]:
        outcomes = index.commit_instances(conn, tenant_id, items, overwrite=overwrite)
        for res in outcomes:
            if res.outcome == "overwritten" and res.obsolete_blob:
                jobs.enqueue(conn, "delete_blobs", {"keys": [res.obsolete_blob]})
        index.reserve_pending_many(conn, tenant_id, next_keys)
        return outcomes

    # If this transaction fails, the pending rows let the garbage collector remove the blobs.
    # A lost race with another node storing the same instance replays it (see store.py).
    outcomes = archive.db.transact(make_visible)
    if ahead is not None:
        ahead.keys, ahead.reserved_at = next_keys, time.time()
    unused: list[str] = []
    for res, it, pos in zip(outcomes, batch, positions, strict=True):
        if res.outcome != "overwritten" and res.obsolete_blob:
            unused.append(res.obsolete_blob)
        if res.outcome == "conflict":
            results[pos] = _conflict(it.parsed)
        elif res.outcome == "mismatch":
            results[pos] = InvalidDicom(
                "the Series Instance UID already belongs to another study",
                **_uids(it.parsed),
            )
        else:
            results[pos] = it.stored(res.outcome)
    if unused:  # lost a race with an identical or conflicting concurrent store
        # Best effort: the answer is already decided (the index committed); a blob that
        # cannot be deleted now keeps its reservation and the collector removes it later.
        _abandon(archive, unused)


def store(
    archive: Archive,
    tenant_id: int,
    spool: Spool,
    sha256: str | None = None,
    *,
    expected_study: str | None = None,
) -> Stored:
    """Store one finished spool as one instance (a batch of one); consumes the spool.

    Raises:
        InvalidDicom: the file is not an acceptable DICOM instance.
        StudyMismatch: the instance does not belong to ``expected_study``.
        Conflict: the SOP Instance UID is stored with other content and the policy rejects.
    """
    prepared = prepare(archive, spool, sha256, expected_study=expected_study)
    outcome = commit(archive, tenant_id, [prepared])[0]
    if isinstance(outcome, DicomhubError):
        raise outcome
    return outcome


def _conflict(parsed: ParsedInstance) -> Conflict:
    return Conflict(
        "an instance with this SOP Instance UID is already stored with different content",
        **_uids(parsed),
    )


def _abandon(archive: Archive, keys: list[str]) -> None:
    """Remove blobs that no instance owns (a failed write, a lost race), best effort.

    Never masks the error that caused a failed write.

    A blob that cannot be deleted now (the store is down) keeps its pending reservation, so the
    garbage collector removes it later.
    """
    removed: list[str] = []
    for key in keys:
        try:
            archive.blobs.delete(key)
        except Exception:
            log.exception("could not remove a blob of an abandoned batch; left to the collector")
            continue
        removed.append(key)
    try:
        with archive.db.write() as conn:
            for key in removed:
                index.release_pending(conn, key)
    except Exception:  # the stale pending rows are collected later
        log.exception("could not release pending blob reservations")
