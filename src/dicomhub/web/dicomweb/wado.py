"""WADO-RS, Retrieve Transaction (PS3.18 §10.4): instances, metadata, frames, bulk data.

Bodies are streamed with bounded memory: blobs are read in chunks in a worker thread and
written to the client part by part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomhub.domain.uids import validate_uid
from dicomhub.errors import NotAcceptable
from dicomhub.services import retrieve
from dicomhub.storage.index.records import InstanceRecord
from dicomhub.web.context import archive_of, base_url, tenant_of
from dicomhub.web.dicomweb.negotiate import (
    EXPLICIT_LE,
    Choice,
    choose_bulk,
    choose_frames,
    choose_instances,
    wants_json,
)
from dicomhub.web.media import parse_accept
from dicomhub.web.multipart import encode_part_headers, multipart_content_type, new_boundary

DICOM_JSON = "application/dicom+json"
CHUNK = 1024 * 1024


def _path_uids(request: Request) -> tuple[str, str | None, str | None]:
    p = request.path_params
    study = validate_uid(p["study"], "Study Instance UID")
    series = validate_uid(p["series"], "Series Instance UID") if "series" in p else None
    sop = validate_uid(p["instance"], "SOP Instance UID") if "instance" in p else None
    return study, series, sop


async def _records(request: Request) -> list[InstanceRecord]:
    study, series, sop = _path_uids(request)
    return await run_in_threadpool(
        retrieve.find_instances, archive_of(request), tenant_of(request), study, series, sop
    )


def _content_type(choice: Choice, boundary: str) -> str:
    if choice.multipart:
        return multipart_content_type(choice.media_type, boundary)
    if choice.transfer_syntax:
        return f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
    return choice.media_type


def _part_header(
    media_type: str, transfer_syntax: str | None, boundary: str, extra: dict[str, str] | None = None
) -> bytes:
    ctype = f"{media_type}; transfer-syntax={transfer_syntax}" if transfer_syntax else media_type
    headers = {"Content-Type": ctype, **(extra or {})}
    return b"--" + boundary.encode() + b"\r\n" + encode_part_headers(headers)


async def retrieve_instances(request: Request) -> Response:
    """GET study, series or instance: the stored Part-10 files (PS3.18 §10.4.1.1.1)."""
    records = await _records(request)
    accept = parse_accept(request.headers.get("accept"))
    choice = choose_instances(
        accept,
        {r.transfer_syntax_uid for r in records},
        single=len(records) == 1,
        transcodable=retrieve.can_transcode,
    )
    archive = archive_of(request)
    boundary = new_boundary()

    def read_all(rec: InstanceRecord) -> list[bytes]:
        return list(retrieve.stream_blob(archive, rec))

    def needs_transcoding(rec: InstanceRecord) -> bool:
        return choice.transcode and rec.transfer_syntax_uid != choice.transfer_syntax

    if not choice.multipart and needs_transcoding(records[0]):
        data = await run_in_threadpool(retrieve.transcode, archive, records[0], EXPLICIT_LE)
        return Response(data, media_type=_content_type(choice, boundary))

    async def body() -> AsyncIterator[bytes]:
        for rec in records:
            if choice.multipart:
                label = choice.transfer_syntax if choice.transcode else rec.transfer_syntax_uid
                yield _part_header(choice.media_type, label, boundary)
            if needs_transcoding(rec):
                yield await run_in_threadpool(retrieve.transcode, archive, rec, EXPLICIT_LE)
            elif rec.size <= 8 * CHUNK:
                for chunk in await run_in_threadpool(read_all, rec):
                    yield chunk
            else:
                async for chunk in _iterate(retrieve.stream_blob(archive, rec)):
                    yield chunk
            if choice.multipart:
                yield b"\r\n"
        if choice.multipart:
            yield b"--" + boundary.encode() + b"--\r\n"

    return StreamingResponse(body(), media_type=_content_type(choice, boundary))


async def _iterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a blocking chunk iterator from a worker thread, one chunk at a time."""
    while True:
        chunk = await run_in_threadpool(next, chunks, b"")
        if not chunk:
            return
        yield chunk


async def retrieve_metadata(request: Request) -> Response:
    """GET .../metadata: DICOM JSON of every instance (PS3.18 §10.4.1.1.2)."""
    records = await _records(request)
    accept = parse_accept(request.headers.get("accept"))
    if not wants_json(accept):
        raise NotAcceptable("metadata is available as application/dicom+json")
    archive = archive_of(request)
    texts = await run_in_threadpool(retrieve.metadata_texts, archive, records, base_url(request))
    body = "[" + ",".join(texts) + "]"
    return Response(body.encode("utf-8"), media_type=DICOM_JSON)


async def retrieve_frames(request: Request) -> Response:
    """GET .../frames/{list}: pixel data of the listed frames (PS3.18 §10.4.1.1.4)."""
    records = await _records(request)
    rec = records[0]
    archive = archive_of(request)
    numbers = retrieve.parse_frame_list(
        request.path_params["frames"], archive.settings.max_frames_per_request
    )
    accept = parse_accept(request.headers.get("accept"))
    choice = choose_frames(
        accept, rec.transfer_syntax_uid, retrieve.is_encapsulated(rec), single=len(numbers) == 1
    )

    def read_frames() -> list[bytes]:
        return [retrieve.frame_bytes(archive, rec, n) for n in numbers]

    frames = await run_in_threadpool(read_frames)
    if not choice.multipart:
        return Response(frames[0], media_type=_content_type(choice, ""))
    boundary = new_boundary()
    url = retrieve.instance_url(base_url(request), rec)
    parts: list[bytes] = []
    for n, data in zip(numbers, frames, strict=True):
        parts.append(
            _part_header(
                choice.media_type,
                choice.transfer_syntax,
                boundary,
                {"Content-Location": f"{url}/frames/{n}"},
            )
        )
        parts.append(data)
        parts.append(b"\r\n")
    parts.append(b"--" + boundary.encode() + b"--\r\n")
    return Response(b"".join(parts), media_type=_content_type(choice, boundary))


async def retrieve_bulkdata(request: Request) -> Response:
    """GET .../bulkdata/{key}: one bulk data value (PS3.18 §10.4.1.1.5)."""
    records = await _records(request)
    rec = records[0]
    choice = choose_bulk(parse_accept(request.headers.get("accept")))
    archive = archive_of(request)
    chunks = await run_in_threadpool(retrieve.bulk_chunks, archive, rec, request.path_params["key"])
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        if choice.multipart:
            yield _part_header(choice.media_type, None, boundary)
        async for chunk in _iterate(chunks):
            yield chunk
        if choice.multipart:
            yield b"\r\n--" + boundary.encode() + b"--\r\n"

    return StreamingResponse(body(), media_type=_content_type(choice, boundary))


def routes() -> list[BaseRoute]:
    """WADO-RS routes, relative to the DICOMweb root."""
    st = "/studies/{study}"
    se = st + "/series/{series}"
    ins = se + "/instances/{instance}"
    return [
        Route(st, retrieve_instances, methods=["GET"]),
        Route(se, retrieve_instances, methods=["GET"]),
        Route(ins, retrieve_instances, methods=["GET"]),
        Route(st + "/metadata", retrieve_metadata, methods=["GET"]),
        Route(se + "/metadata", retrieve_metadata, methods=["GET"]),
        Route(ins + "/metadata", retrieve_metadata, methods=["GET"]),
        Route(ins + "/frames/{frames}", retrieve_frames, methods=["GET"]),
        Route(ins + "/bulkdata/{key:path}", retrieve_bulkdata, methods=["GET"]),
    ]
