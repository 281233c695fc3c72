"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.1.1.4).

``.../rendered`` and ``.../thumbnail`` at study, series, instance and frame level, as
``image/jpeg`` (the default), ``image/png`` or ``image/gif`` (animated for several frames);
an Encapsulated PDF instance as ``application/pdf``. Study and series level answer
``multipart/related`` with one image per instance, or, for ``Accept: application/zip``
(``; type="image/png"`` chooses the image type, default ``image/jpeg``), a streamed ZIP whose
entry names are ordinals (``series-001/image-0001.jpg``), never UIDs. Query parameters
(PS3.18 §8.3.5): ``window=center,width[,linear|linear-exact|sigmoid]``,
``viewport=vw,vh[,sx,sy,sw,sh]`` (§8.3.5.1.3: fit, or a source region fitted, negative sw/sh
flipping), ``quality``, ``accept``; ours: ``preset=NAME`` (named windows), ``frames=all|1,5-9``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomhub.errors import InvalidInput, NotAcceptable, NotRenderable
from dicomhub.imaging import encode as enc
from dicomhub.imaging.pipeline import RenderOptions, parse_window, preset_window
from dicomhub.services import render, retrieve
from dicomhub.services.archive import Archive
from dicomhub.storage.index.records import InstanceRecord
from dicomhub.web.context import archive_of, base_url, tenant_of
from dicomhub.web.dicomweb.wado import _path_uids, _records
from dicomhub.web.media import MediaRange, parse_accept
from dicomhub.web.multipart import encode_part_headers, multipart_content_type, new_boundary

PDF = "application/pdf"
ZIP = "application/zip"
DEFAULT_MEDIA = "image/jpeg"  # PS3.18 §8.7.4: image/jpeg is the default rendered type
_KNOWN_PARAMS = {"window", "viewport", "quality", "preset", "frames", "accept", "annotation"}
SINGLE, MULTIPART, ZIPPED = "single", "multipart", "zip"


def choose_media(
    accept: list[MediaRange], allow_pdf: bool = False, allow_zip: bool = False
) -> tuple[str, str]:
    """(media type of the images, packaging) for rendered content (PS3.18 Table 8.7.4-2).

    The packaging is ``single`` (one image), ``multipart`` (``multipart/related``, PS3.18
    §8.7.3.2) or ``zip`` (``application/zip``, where ``allow_zip``; its ``type`` parameter names
    the image type, as ``type`` does for ``multipart/related``).

    Raises:
        NotAcceptable: No acceptable range names something we produce.
    """
    candidates = [*enc.MEDIA_TYPES, *([PDF] if allow_pdf else [])]
    default = PDF if allow_pdf else DEFAULT_MEDIA
    for r in accept:
        if r.type == "multipart" and r.subtype in ("related", "*"):
            part = r.params.get("type", default).lower()
            if part in candidates:
                return part, MULTIPART
            continue
        if allow_zip and r.media_type == ZIP:
            part = r.params.get("type", DEFAULT_MEDIA).lower()
            if part in enc.MEDIA_TYPES:
                return part, ZIPPED
            continue
        if r.type == "*":
            return default, SINGLE
        if r.type == "image" and r.subtype == "*" and not allow_pdf:
            return DEFAULT_MEDIA, SINGLE
        if r.media_type in candidates:
            return r.media_type, SINGLE
    raise NotAcceptable(
        "cannot satisfy Accept; rendered images are available as image/jpeg, image/png, "
        "image/gif"
        + (", application/pdf" if allow_pdf else "")
        + ('; several as application/zip; type="image/..."' if allow_zip else "")
    )


def _request(request: Request, media: str, thumbnail: bool) -> render.RenderRequest:
    q = request.query_params
    unknown = set(q.keys()) - _KNOWN_PARAMS
    if unknown:
        raise InvalidInput(f"unknown query parameter {sorted(unknown)[0][:32]!r}")
    archive = archive_of(request)
    window = None
    if "window" in q and "preset" in q:
        raise InvalidInput("give either window or preset, not both")
    if "window" in q:
        window = parse_window(q["window"])
    elif "preset" in q:
        window = preset_window(q["preset"], archive.settings.window_presets)
    viewport, region = None, None
    if "viewport" in q:
        viewport, region = enc.parse_viewport_region(q["viewport"])
    if thumbnail and viewport is None:
        size = archive.settings.thumbnail_size
        viewport = (size, size)
    quality = enc.parse_quality(q["quality"]) if "quality" in q else None
    render.check_frame_ranges(q.get("frames"))
    return render.RenderRequest(
        media, RenderOptions(window=window), viewport, quality, q.get("frames"), region
    )


def _is_thumbnail(request: Request) -> bool:
    """Whether the resource is ``.../thumbnail`` (PS3.18 §10.4.1.1.4); the raw path is enough."""
    path: str = request.scope["path"]
    return path.endswith("/thumbnail")


def _accept(request: Request) -> list[MediaRange]:
    return parse_accept(request.query_params.get("accept") or request.headers.get("accept"))


def _multipart(parts: list[tuple[str, str, bytes]]) -> Response:
    boundary = new_boundary()
    out: list[bytes] = []
    for media, location, data in parts:
        headers = {"Content-Type": media, "Content-Location": location}
        out += [b"--" + boundary.encode() + b"\r\n" + encode_part_headers(headers), data, b"\r\n"]
    out.append(b"--" + boundary.encode() + b"--\r\n")
    media = parts[0][0] if parts else DEFAULT_MEDIA
    return Response(b"".join(out), media_type=multipart_content_type(media, boundary))


def _pdf_or_none(archive: Archive, rec: InstanceRecord, accept: list[MediaRange]) -> bytes | None:
    if rec.sop_class_uid != render.ENCAPSULATED_PDF:
        return None
    media, _ = choose_media(accept, allow_pdf=True)
    if media != PDF:
        raise NotRenderable(
            "the instance is an encapsulated PDF; it is available as application/pdf"
        )
    return render.encapsulated_pdf(archive, rec)


def _instance_record(request: Request) -> InstanceRecord:
    """The instance of an instance or frame URL (blocking: an index lookup)."""
    study, series, sop = _path_uids(request)
    archive = archive_of(request)
    return retrieve.find_instances(archive, tenant_of(request), study, series, sop)[0]


async def rendered_instance(request: Request) -> Response:
    """GET .../instances/{i}/rendered or /thumbnail (PS3.18 §10.4.1.1.3).

    The lookup, the checks and the rendering run in one worker thread: a single thread hop
    per request (each hop costs more than rendering a cached frame's LUT lookup).
    """
    thumbnail = _is_thumbnail(request)
    archive = archive_of(request)
    accept = _accept(request)

    def work() -> tuple[
        InstanceRecord, str, str, render.RenderRequest | None, list[int], list[bytes]
    ]:
        rec = _instance_record(request)
        pdf = _pdf_or_none(archive, rec, accept)
        if pdf is not None:
            return rec, PDF, SINGLE, None, [], [pdf]
        media, packaging = choose_media(accept, allow_zip=not thumbnail)
        req = _request(request, media, thumbnail)
        if packaging == ZIPPED:  # every frame, unless frames= says otherwise
            numbers = render.instance_frames(archive, rec, req, True)
            _check_count(len(numbers), archive)
            return rec, media, packaging, req, numbers, []
        numbers = render.instance_frames(archive, rec, req)
        return (
            rec,
            media,
            packaging,
            req,
            numbers,
            render.rendered_frames(archive, rec, numbers, req),
        )

    rec, media, packaging, req, numbers, images = await run_in_threadpool(work)
    if packaging == ZIPPED and req is not None:
        return await _zip(request, [render.Item(rec, "", numbers)], req, "instance")
    if len(images) == 1 and packaging == SINGLE:
        return Response(images[0], media_type=media)
    url = retrieve.instance_url(base_url(request), rec)
    return _multipart([(media, f"{url}/frames/{i + 1}", img) for i, img in enumerate(images)])


async def rendered_frames(request: Request) -> Response:
    """GET .../frames/{list}/rendered or /thumbnail (PS3.18 §10.4.1.1.3)."""
    thumbnail = _is_thumbnail(request)
    archive = archive_of(request)
    accept = _accept(request)

    def work() -> tuple[InstanceRecord, list[int], str, str, render.RenderRequest, list[bytes]]:
        rec = _instance_record(request)
        numbers = retrieve.parse_frame_list(
            request.path_params["frames"], archive.settings.max_frames_per_request
        )
        media, packaging = choose_media(accept, allow_zip=not thumbnail)
        req = _request(request, media, thumbnail)
        if packaging == ZIPPED:
            return rec, numbers, media, packaging, req, []
        return (
            rec,
            numbers,
            media,
            packaging,
            req,
            render.rendered_frames(archive, rec, numbers, req),
        )

    rec, numbers, media, packaging, req, images = await run_in_threadpool(work)
    if packaging == ZIPPED:
        return await _zip(request, [render.Item(rec, "", numbers)], req, "frames")
    if len(images) == 1 and packaging == SINGLE:
        return Response(images[0], media_type=media)
    url = retrieve.instance_url(base_url(request), rec)
    return _multipart(
        [(media, f"{url}/frames/{n}", img) for n, img in zip(numbers, images, strict=False)]
    )


async def rendered_collection(request: Request) -> Response:
    """GET study or series ``/rendered``: one image per renderable instance (PS3.18 §10.4.1.1.3).

    As ``multipart/related`` (each part with its Content-Location) or a ZIP (``Accept:
    application/zip``), both streamed instance by instance. ``/thumbnail`` at these levels is
    a single image of the first renderable instance (PS3.18 §10.4.1.1.4).
    """
    thumbnail = _is_thumbnail(request)
    records = await _records(request)
    archive = archive_of(request)
    media, packaging = choose_media(_accept(request), allow_zip=not thumbnail)
    req = _request(request, media, thumbnail)
    study_level = "series" not in request.path_params
    items = _collection_items(records, study_level)
    if thumbnail:
        first = await run_in_threadpool(next, render.rendered_items(archive, items, req))
        return Response(first.images[0], media_type=media)
    _check_count(len(records), archive)
    if packaging == ZIPPED:
        return await _zip(request, items, req, "study" if study_level else "series")
    base = base_url(request)
    boundary = new_boundary()

    def chunks() -> Iterator[bytes]:
        for out in render.rendered_items(archive, items, req):
            url = retrieve.instance_url(base, out.item.rec)
            for n, data in zip(out.frames, out.images, strict=False):
                location = f"{url}/frames/{n}/rendered" if out.per_frame else f"{url}/rendered"
                headers = {"Content-Type": media, "Content-Location": location}
                yield b"--" + boundary.encode() + b"\r\n" + encode_part_headers(headers) + data
                yield b"\r\n"
        yield b"--" + boundary.encode() + b"--\r\n"

    return await _stream(chunks(), multipart_content_type(media, boundary), {})


def _check_count(count: int, archive: Archive) -> None:
    limit = archive.settings.max_frames_per_request
    if count > limit:
        raise InvalidInput(f"a ZIP holds at most {limit} images; this asks for {count}")


def _collection_items(records: list[InstanceRecord], study_level: bool) -> list[render.Item]:
    """ZIP entry stems by ordinal: ``series-001/image-0001`` (study), ``image-0001`` (series).

    An instance keeps the ordinal of its place in its series (index order: Series Number,
    Instance Number), so an instance left out leaves a gap; UIDs never appear in names.
    """
    by_series: dict[str, list[InstanceRecord]] = {}
    for rec in records:
        by_series.setdefault(rec.series_uid, []).append(rec)
    series_width = max(3, len(str(len(by_series))))
    items: list[render.Item] = []
    for s, members in enumerate(by_series.values(), start=1):
        width = max(4, len(str(len(members))))
        folder = f"series-{s:0{series_width}d}/" if study_level else ""
        items += [
            render.Item(rec, f"{folder}image-{i:0{width}d}")
            for i, rec in enumerate(members, start=1)
        ]
    return items


async def _zip(
    request: Request, items: list[render.Item], req: render.RenderRequest, name: str
) -> Response:
    """A streamed ``application/zip`` of rendered images, as an attachment ``{name}.zip``."""
    archive = archive_of(request)
    limit = archive.settings.max_frames_per_request
    chunks = render.rendered_zip(archive, items, req, limit)
    disposition = {"Content-Disposition": f'attachment; filename="{name}.zip"'}
    return await _stream(chunks, ZIP, disposition)


async def _stream(chunks: Iterator[bytes], media_type: str, headers: dict[str, str]) -> Response:
    """Stream ``chunks`` (produced in worker threads), after producing the first.

    The first instance is rendered before the response starts, so a request that renders
    nothing (or is refused) gets its 4xx with the reason; the rest streams as it is rendered
    (an error after that can only cut the response short).
    """
    first = await run_in_threadpool(next, chunks, b"")

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in _iterate(chunks):
            yield chunk

    return StreamingResponse(body(), media_type=media_type, headers=headers)


async def _iterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a blocking chunk iterator from a worker thread, one chunk at a time."""
    while True:
        chunk = await run_in_threadpool(next, chunks, None)
        if chunk is None:
            return
        yield chunk


def routes() -> list[BaseRoute]:
    """Rendered and thumbnail routes, relative to the DICOMweb root."""
    st = "/studies/{study}"
    se = st + "/series/{series}"
    ins = se + "/instances/{instance}"
    fr = ins + "/frames/{frames}"
    out: list[BaseRoute] = []
    for leaf in ("rendered", "thumbnail"):
        out += [
            Route(f"{st}/{leaf}", rendered_collection, methods=["GET"]),
            Route(f"{se}/{leaf}", rendered_collection, methods=["GET"]),
            Route(f"{ins}/{leaf}", rendered_instance, methods=["GET"]),
            Route(f"{fr}/{leaf}", rendered_frames, methods=["GET"]),
        ]
    return out
