"""STOW-RS, Store Instances (PS3.18 §10.5).

``POST {root}/studies`` and ``POST {root}/studies/{study}`` with a
``multipart/related; type="application/dicom"`` body. The body is streamed: each part goes to a
:class:`~dicomhub.services.spool.Spool` as it arrives and is stored as soon as it is complete,
so memory stays bounded whatever the request size. The response is the Store Instances Response
Module (PS3.18 §10.5.3) as DICOM JSON.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dicomhub import errors
from dicomhub.domain.uids import validate_uid
from dicomhub.services import ingest
from dicomhub.services.spool import Spool
from dicomhub.web.context import archive_of, base_url, tenant_of
from dicomhub.web.multipart import MultipartParser, PartData, PartEnd, PartStart, parse_content_type

log = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"

# Failure Reason (0008,1197) values, PS3.18 §10.5.3 and PS3.4 Annex B.2.3.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

FAILURE_REASON: list[tuple[type[errors.DicomhubError], int]] = [
    (errors.StudyMismatch, DATASET_DOES_NOT_MATCH),
    (errors.InvalidDicom, CANNOT_UNDERSTAND),
    (errors.Conflict, DUPLICATE_SOP_INSTANCE),
    (errors.PayloadTooLarge, OUT_OF_RESOURCES),
    (errors.UnsupportedMediaType, CANNOT_UNDERSTAND),
    (errors.Unavailable, OUT_OF_RESOURCES),
]


def failure_reason(exc: errors.DicomhubError) -> int:
    """The Failure Reason code for a per-instance error."""
    for cls, code in FAILURE_REASON:
        if isinstance(exc, cls):
            return code
    return PROCESSING_FAILURE


@dataclass
class StoreReport:
    """Accumulates the Store Instances Response (PS3.18 Table 10.5.3-1)."""

    root: str
    study_uid: str | None
    referenced: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    conflicts: int = 0

    def ok(self, stored: ingest.Stored) -> None:
        """Record a stored (or idempotently re-stored) instance."""
        url = (
            f"{self.root}/studies/{stored.study_instance_uid}/series/"
            f"{stored.series_instance_uid}/instances/{stored.sop_instance_uid}"
        )
        self.referenced.append(
            {
                "00081150": {"vr": "UI", "Value": [stored.sop_class_uid]},
                "00081155": {"vr": "UI", "Value": [stored.sop_instance_uid]},
                "00081190": {"vr": "UR", "Value": [url]},
            }
        )
        if self.study_uid is None:
            self.study_uid = stored.study_instance_uid

    def fail(self, exc: errors.DicomhubError) -> None:
        """Record a failed part with its reason (and UIDs when they could be read)."""
        item: dict[str, Any] = {
            "00081197": {"vr": "US", "Value": [failure_reason(exc)]},
            "00000902": {"vr": "LO", "Value": [exc.reason[:64]]},
        }
        if cls := exc.context.get("sop_class_uid"):
            item["00081150"] = {"vr": "UI", "Value": [cls]}
        if inst := exc.context.get("sop_instance_uid"):
            item["00081155"] = {"vr": "UI", "Value": [inst]}
        self.failed.append(item)
        if isinstance(exc, errors.Conflict | errors.StudyMismatch):
            self.conflicts += 1

    def response(self) -> Response:
        """200 all stored, 202 some failed, 409 none stored (PS3.18 §10.5.3.1)."""
        body: dict[str, Any] = {}
        if self.study_uid is not None:
            body["00081190"] = {"vr": "UR", "Value": [f"{self.root}/studies/{self.study_uid}"]}
        if self.failed:
            body["00081198"] = {"vr": "SQ", "Value": self.failed}
        if self.referenced:
            body["00081199"] = {"vr": "SQ", "Value": self.referenced}
        if not self.failed:
            status = 200
        elif self.referenced:
            status = 202
        else:
            status = 409
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


def _check_request(request: Request, max_bytes: int) -> bytes:
    """Validate the request's Content-Type and Content-Length; return the boundary."""
    ctype = request.headers.get("content-type")
    if not ctype:
        raise errors.UnsupportedMediaType("missing Content-Type; expected multipart/related")
    media, params = parse_content_type(ctype)
    if media != "multipart/related":
        raise errors.UnsupportedMediaType(
            f'Content-Type {media} is not supported; use multipart/related; type="{DICOM}"'
        )
    part_type = params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise errors.UnsupportedMediaType(
            f'multipart/related type {part_type} is not supported; use type="{DICOM}"'
        )
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        raise errors.InvalidInput("multipart/related Content-Type without a valid boundary")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise errors.InvalidInput("invalid Content-Length")
        if int(length) > max_bytes:
            raise errors.PayloadTooLarge(f"request larger than the limit of {max_bytes} bytes")
    return boundary.encode("latin-1")


BATCH = 32  # instances committed together (group commit)
IN_FLIGHT = 4  # instances parsed concurrently while the body is still arriving
MEMORY_PART = 4 * 1024 * 1024  # parts up to this size stay in memory until a worker spools them
WRITE_CHUNK = 1024 * 1024  # larger parts are written to their spool in chunks of this size


class _Part:
    """One part of the body as it arrives.

    Small parts (most DICOM objects) are kept in memory and spooled by a worker thread; larger
    ones go to a spool file in 1 MiB writes from worker threads. The event loop itself never
    creates or writes files: on a busy disk a file create can wait on the journal for
    milliseconds, which would stall every request.
    """

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.chunks: list[bytes | memoryview] = []
        self.buffered = 0
        self.size = 0
        self.spool: Spool | None = None

    async def write(self, data: bytes | memoryview) -> None:
        """Append data; raises PayloadTooLarge past the instance bound."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise errors.PayloadTooLarge(
                f"instance larger than the limit of {self.max_bytes} bytes"
            )
        self.chunks.append(data)
        self.buffered += len(data)
        if self.size > MEMORY_PART and self.buffered >= WRITE_CHUNK:
            chunks, self.chunks, self.buffered = self.chunks, [], 0
            await run_in_threadpool(self._write, chunks)

    def _write(self, chunks: list[bytes | memoryview]) -> None:
        if self.spool is None:
            self.spool = Spool(self.tmp_dir, self.max_bytes)
        self.spool.write_many(chunks)  # one writev, hashed as written, no join

    def to_spool(self) -> tuple[Spool, str | None]:
        """Write what is buffered, close the spool, return it and its SHA-256 (worker thread)."""
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        self._write(chunks)
        assert self.spool is not None
        return self.spool, self.spool.finish()

    def discard(self) -> None:
        """Drop the part (its spool file, if any)."""
        self.chunks = []
        if self.spool is not None:
            self.spool.discard()


class _Pipeline:
    """Prepares parts in worker threads while the body streams in; commits them in batches."""

    def __init__(self, request: Request, study: str | None, report: StoreReport) -> None:
        self.archive = archive_of(request)
        self.tenant_id = tenant_of(request)
        self.study = study
        self.report = report
        self.tasks: list[asyncio.Task[ingest.Prepared | errors.DicomhubError]] = []
        self.slots = asyncio.Semaphore(IN_FLIGHT)

    def _prepare_sync(self, part: _Part) -> ingest.Prepared:
        try:
            spool, sha256 = part.to_spool()
        except BaseException:
            part.discard()
            raise
        return ingest.prepare(self.archive, spool, sha256, expected_study=self.study)

    async def _prepare(self, part: _Part) -> ingest.Prepared | errors.DicomhubError:
        try:
            return await run_in_threadpool(self._prepare_sync, part)
        except errors.DicomhubError as exc:
            return exc
        finally:
            self.slots.release()

    async def add(self, part: _Part) -> None:
        """Schedule a finished part; flush a batch when enough parts are waiting."""
        await self.slots.acquire()
        self.tasks.append(asyncio.create_task(self._prepare(part)))
        if len(self.tasks) >= BATCH:
            await self.flush()

    def fail(self, exc: errors.DicomhubError) -> None:
        """Record a part that failed before it could be prepared."""
        self.report.fail(exc)

    async def flush(self) -> None:
        """Wait for scheduled parts and commit the prepared ones, in arrival order."""
        tasks, self.tasks = self.tasks, []
        outcomes = await asyncio.gather(*tasks)
        ready = [o for o in outcomes if isinstance(o, ingest.Prepared)]
        committed = iter(
            await run_in_threadpool(ingest.commit, self.archive, self.tenant_id, ready)
            if ready
            else []
        )
        for outcome in outcomes:
            result = next(committed) if isinstance(outcome, ingest.Prepared) else outcome
            if isinstance(result, errors.DicomhubError):
                self.report.fail(result)
            else:
                self.report.ok(result)

    async def abort(self) -> None:
        """Discard everything scheduled (the request failed)."""
        tasks, self.tasks = self.tasks, []
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, ingest.Prepared):
                outcome.spool.discard()


async def store_instances(request: Request) -> Response:
    """POST /studies and /studies/{study}: store every part, report each outcome."""
    settings = archive_of(request).settings
    study = request.path_params.get("study")
    if study is not None:
        study = validate_uid(study, "Study Instance UID")
    boundary = _check_request(request, settings.max_request_bytes)
    parser = MultipartParser(boundary, max_parts=settings.max_parts)
    report = StoreReport(base_url(request), None)
    pipeline = _Pipeline(request, study, report)
    part: _Part | None = None
    part_error: errors.DicomhubError | None = None
    received = 0

    async def end_part() -> None:
        nonlocal part, part_error
        current, part = part, None
        if part_error is not None:
            pipeline.fail(part_error)
            part_error = None
        elif current is not None:
            await pipeline.add(current)

    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > settings.max_request_bytes:
                raise errors.PayloadTooLarge(
                    f"request larger than the limit of {settings.max_request_bytes} bytes"
                )
            for event in parser.feed(chunk):
                if isinstance(event, PartData):
                    if part is not None:
                        try:
                            await part.write(event.data)
                        except errors.PayloadTooLarge as exc:
                            part.discard()
                            part, part_error = None, exc
                elif isinstance(event, PartStart):
                    part_error = _check_part(event)
                    part = (
                        None if part_error else _Part(settings.tmp_dir, settings.max_instance_bytes)
                    )
                else:
                    await end_part()
        for event in parser.close():
            if isinstance(event, PartEnd):
                await end_part()
        await pipeline.flush()
    except ClientDisconnect:
        await pipeline.abort()
        log.info("STOW-RS client disconnected; %d instances stored", len(report.referenced))
        raise errors.InvalidInput("client disconnected before the end of the request") from None
    except BaseException:
        await pipeline.abort()
        raise
    finally:
        if part is not None:
            part.discard()
    if not report.referenced and not report.failed:
        raise errors.InvalidInput("the multipart body contains no parts")
    return report.response()


def _check_part(event: PartStart) -> errors.DicomhubError | None:
    """A part whose media type is not application/dicom fails on its own (0xC000)."""
    ctype = event.headers.get("content-type")
    if not ctype:
        return None
    try:
        media, _ = parse_content_type(ctype)
    except errors.InvalidInput as exc:
        return errors.UnsupportedMediaType(f"unreadable part Content-Type: {exc.reason}")
    if media != DICOM:
        return errors.UnsupportedMediaType(f"part media type {media} is not {DICOM}")
    return None


def routes() -> list[BaseRoute]:
    """STOW-RS routes, relative to the DICOMweb root."""
    return [
        Route("/studies", store_instances, methods=["POST"]),
        Route("/studies/{study}", store_instances, methods=["POST"]),
    ]
