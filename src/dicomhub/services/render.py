"""Rendering stored instances (PS3.18 §10.4.1.1.3 rendered, §10.4.1.1.4 thumbnail).

Combines retrieval (indexed frame offsets, ranged blob reads) with the pixel pipeline in
:mod:`dicomhub.imaging`. The pixel module of an instance is built once (from the DICOM JSON in
the index for a plain image, else from the file's header) and decoded frames and encoded images
are kept in memory-bounded LRUs, so rendering frame after frame of a multi-frame instance never
re-reads or re-parses the file, and asking for the same image again costs a lookup.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from dicomhub.errors import InvalidInput, NotFound, NotRenderable
from dicomhub.imaging import encode as enc
from dicomhub.imaging.cache import SizedLRU
from dicomhub.imaging.decode import Decoded, can_decode, decode_frame, syntax_name
from dicomhub.imaging.module import NATIVE_SYNTAXES, PixelModule, pixel_module
from dicomhub.imaging.pipeline import RenderOptions, render_frame
from dicomhub.imaging.source import dataset_frames, module_of
from dicomhub.services import retrieve
from dicomhub.services.archive import Archive
from dicomhub.storage.index import store as index
from dicomhub.storage.index.records import InstanceRecord

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_PIXEL_KEYS = {
    "7FE00010": "PixelData",
    "7FE00008": "FloatPixelData",
    "7FE00009": "DoubleFloatPixelData",
}
# Syntaxes whose frames are read from the whole data set rather than by offset: big endian
# (8-bit OW samples are word-swapped, PS3.5 §7.3) and deflated (no usable offsets).
_WHOLE_READ = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}

log = logging.getLogger(__name__)

_frames: SizedLRU[Decoded] = SizedLRU(256 * 1024**2)
_modules: SizedLRU[PixelModule] = SizedLRU(512)
_raw: SizedLRU[list[bytes]] = SizedLRU(64 * 1024**2)
#: Encoded PNG/JPEG images by instance, frame and every rendering parameter; a share of
#: ``DICOMHUB_RENDER_CACHE_BYTES`` (see :func:`rendered_frames`).
_encoded: SizedLRU[bytes] = SizedLRU(32 * 1024**2)
#: The share of the render cache budget that holds encoded images (the rest: decoded frames).
ENCODED_SHARE = 8


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """What to produce: media type, VOI options, viewport, JPEG quality, frames, region.

    ``region`` is the source region of ``viewport=vw,vh,sx,sy,sw,sh`` (PS3.18 §8.3.5.1.3): the
    rendered frame is cropped (and flipped) to it before it is fitted into ``viewport``.
    """

    media_type: str = "image/jpeg"
    options: RenderOptions = field(default_factory=RenderOptions)
    viewport: tuple[int, int] | None = None
    quality: int | None = None
    frames: str | None = None  # "all" | "1,5-9"; None = the resource's default
    region: enc.Region | None = None


def _key(rec: InstanceRecord) -> tuple[str, str]:
    return rec.blob_key, rec.sha256


def module_for(archive: Archive, rec: InstanceRecord) -> PixelModule:
    """The instance's pixel module (cached; header read once).

    Raises:
        NotRenderable: The instance has no pixel data.
    """
    cached = _modules.get(_key(rec))
    if cached is not None:
        return cached
    if rec.sop_class_uid == ENCAPSULATED_PDF:
        raise NotRenderable("the instance is an encapsulated PDF; request application/pdf")
    keys = [k for k in _PIXEL_KEYS if k in rec.bulk()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = _read_module(archive, rec, keys)
        except _PARSE_ERRORS as exc:
            # The parser's message may quote element values (PHI): name the error type only.
            reason = f"the instance's header cannot be read for rendering ({type(exc).__name__})"
            raise NotRenderable(reason) from exc
    _modules.put(_key(rec), module, 1)
    return module


_PARSE_ERRORS = (ValueError, EOFError, AttributeError, KeyError, TypeError, IndexError)


def _read_module(archive: Archive, rec: InstanceRecord, keys: list[str]) -> PixelModule:
    if rec.transfer_syntax_uid in _WHOLE_READ or not (keys or rec.frames()):
        ds = retrieve.full_dataset(archive, rec)
        module = module_of(ds)
        _raw.put(_key(rec), dataset_frames(ds, module), rec.size)
        return module
    keyword = _PIXEL_KEYS[keys[0]] if keys else None
    if keyword is not None and rec.frames():
        header = _header_from_metadata(archive, rec)
        if header is not None:
            return pixel_module(header, rec.transfer_syntax_uid, keyword)
    header = retrieve.header_dataset(archive, rec)
    return pixel_module(header, rec.transfer_syntax_uid, _PIXEL_KEYS[keys[0]] if keys else None)


#: What the pixel pipeline reads of a plain image (PS3.3 C.7.6.3 Image Pixel, C.11.1 Modality
#: LUT rescale, C.11.2 VOI LUT window, C.11.6 Presentation LUT shape), by tag.
_PLAIN_TAGS = frozenset(
    {
        "00080016",  # SOP Class UID
        "00080060",  # Modality
        "00280002",  # Samples per Pixel
        "00280004",  # Photometric Interpretation
        "00280006",  # Planar Configuration
        "00280008",  # Number of Frames
        "00280010",  # Rows
        "00280011",  # Columns
        "00280100",  # Bits Allocated
        "00280101",  # Bits Stored
        "00280102",  # High Bit
        "00280103",  # Pixel Representation
        "00281050",  # Window Center
        "00281051",  # Window Width
        "00281052",  # Rescale Intercept
        "00281053",  # Rescale Slope
        "00281054",  # Rescale Type
        "00281056",  # VOI LUT Function
        "20500020",  # Presentation LUT Shape
    }
)
#: Whatever else the pipeline reads from the header: LUT sequences (C.11.1, C.11.2),
#: functional groups (C.7.6.16), palettes (C.7.9); overlays (60xx) are checked by group.
_HEADER_ONLY = frozenset(
    {
        "00283000",  # Modality LUT Sequence
        "00283010",  # VOI LUT Sequence
        "52009229",  # Shared Functional Groups Sequence
        "52009230",  # Per-frame Functional Groups Sequence
        "00281101",  # Red/Green/Blue Palette Color Lookup Table Descriptor
        "00281102",
        "00281103",
        "00281201",  # Red/Green/Blue Palette Color Lookup Table Data
        "00281202",
        "00281203",
        "00281221",  # Segmented Red/Green/Blue Palette Color Lookup Table Data
        "00281222",
        "00281223",
    }
)


def _header_from_metadata(archive: Archive, rec: InstanceRecord) -> Any | None:
    """The Image Pixel attributes from the DICOM JSON stored in the index (PS3.18 §F.2).

    A plain image (rescale and window, no LUT sequences, functional groups, palette or
    overlays) needs a dozen attributes, all in the metadata the index keeps for WADO-RS: a
    small data set of just those replaces parsing the file's header (the larger part of the
    first rendering of an instance). Anything else, or metadata that does not convert,
    returns None and the header is read from the file as before.
    """
    import json

    from pydicom.dataset import Dataset

    try:
        with archive.db.read() as conn:
            text = index.metadata_json(conn, [rec.pk]).get(rec.pk)
        if text is None:
            return None
        elements = json.loads(text)
        if any(tag in _HEADER_ONLY or tag.startswith("60") for tag in elements):
            return None
        header = Dataset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for tag in _PLAIN_TAGS.intersection(elements):
                element = elements[tag]
                values = element.get("Value")
                if set(element) - {"vr", "Value"} or not isinstance(values, list):
                    return None  # a bulk data reference, inline binary or an odd value
                value = values[0] if len(values) == 1 else values
                header.add_new(int(tag, 16), element["vr"], value)
        return header
    except Exception:  # malformed stored metadata: the file's header decides
        log.debug("pixel module from metadata failed", exc_info=True)
        return None


def _frame_data(archive: Archive, rec: InstanceRecord, module: PixelModule, number: int) -> bytes:
    if number < 1 or number > module.number_of_frames:
        raise NotFound(
            f"frame {number} does not exist (the instance has {module.number_of_frames})"
        )
    if rec.transfer_syntax_uid in _WHOLE_READ or not rec.frames():
        frames = _raw.get(_key(rec))
        if frames is None:
            ds = retrieve.full_dataset(archive, rec)
            frames = dataset_frames(ds, module)
            _raw.put(_key(rec), frames, rec.size)
        if number > len(frames):
            raise NotRenderable(f"pixel data holds {len(frames)} frames, not {number}")
        return frames[number - 1]
    try:
        return retrieve.frame_bytes(archive, rec, number)
    except InvalidInput as exc:
        raise NotRenderable(exc.reason) from exc


def decoded_frame(
    archive: Archive, rec: InstanceRecord, number: int
) -> tuple[PixelModule, Decoded]:
    """Frame ``number`` (1-based) decoded, from the cache when possible."""
    module = module_for(archive, rec)
    _frames.max_bytes = archive.settings.render_cache_bytes  # DICOMHUB_RENDER_CACHE_BYTES
    key = (*_key(rec), number)
    hit = _frames.get(key)
    if hit is None:
        hit = decode_frame(module, _frame_data(archive, rec, module, number))
        _frames.put(key, hit, int(hit.array.nbytes))
    return module, hit


#: Most frames one ``frames=`` parameter names.
MAX_FRAMES = 100000


class FramesOutside(InvalidInput):
    """``frames=`` names a frame the instance does not have.

    A 400 for an instance; in a study or series, that instance is left out.
    """


def parse_frame_ranges(text: str | None, count: int, default: list[int]) -> list[int]:
    """Parse ``all`` or ``1,5-9`` (1-based) against ``count`` frames.

    Raises:
        InvalidInput: Malformed, a descending range, frame 0, or more than
            :data:`MAX_FRAMES` frames.
        FramesOutside: A frame above ``count``.
    """
    if text is None or not text.strip():
        return default
    if text.strip().lower() == "all":
        return list(range(1, count + 1))
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or len(lo) > 9 or len(hi) > 9:
            raise InvalidInput("frames must be 'all' or numbers and ranges like 1,5-9")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a < 1 or b < a:
            raise InvalidInput(f"frames {part.strip()} is not a frame or range of frames 1..")
        if len(out) + b - a + 1 > MAX_FRAMES:
            raise InvalidInput(f"too many frames (at most {MAX_FRAMES})")
        if b > count:
            raise FramesOutside(f"frames {part.strip()} outside 1..{count}")
        out.extend(range(a, b + 1))
    return out


def check_frame_ranges(text: str | None) -> None:
    """Check the syntax and size of ``frames=`` before any instance is read.

    Raises:
        InvalidInput: As :func:`parse_frame_ranges`.
    """
    parse_frame_ranges(text, MAX_FRAMES, [])


def rendered_frames(
    archive: Archive, rec: InstanceRecord, numbers: list[int], req: RenderRequest
) -> list[bytes]:
    """Encode each frame separately (PNG/JPEG), or all of them as one GIF (animated if > 1).

    Frames are decoded, rendered and encoded in parallel (numpy, the codecs and zlib release
    the GIL). A PNG or JPEG image is kept in a small LRU of encoded images (a 1/8 share of
    ``DICOMHUB_RENDER_CACHE_BYTES``), keyed by the stored object (blob key and SHA-256, so a
    replaced instance never hits), the frame and every parameter that changes the result
    (media type, window or preset, VOI mode, viewport, region, quality; PS3.18 §8.3.5): the
    same frame asked again, as viewers do when paging through a stack, costs a lookup.
    """
    module_for(archive, rec)  # fail early (no image) before fanning out

    def one(n: int) -> Image.Image:
        module, decoded = decoded_frame(archive, rec, n)
        frame = enc.crop(_render(module, decoded, n, req.options), req.region)
        return enc.resize(frame, req.viewport)

    if req.media_type == "image/gif":
        return [enc.encode(_map(one, numbers), req.media_type)]
    _encoded.max_bytes = archive.settings.render_cache_bytes // ENCODED_SHARE
    params = (req.media_type, req.options, req.viewport, req.region, req.quality)
    keys = [(*_key(rec), n, params) for n in numbers]
    out = [_encoded.get(k) for k in keys]
    missing = [i for i, hit in enumerate(out) if hit is None]
    if missing:

        def encoded(i: int) -> bytes:
            data = enc.encode([one(numbers[i])], req.media_type, req.quality)
            _encoded.put(keys[i], data, len(data))
            return data

        for i, data in zip(missing, _map(encoded, missing), strict=True):
            out[i] = data
    return [data for data in out if data is not None]


def _render(
    module: PixelModule, decoded: Decoded, number: int, options: RenderOptions
) -> np.ndarray[Any, Any]:
    """One frame through the pipeline; malformed LUTs or attributes are the file's problem."""
    try:
        return render_frame(module, decoded, number - 1, options)
    except Exception as exc:  # a bad LUT/overlay/palette must be a 4xx with a reason, not a 500
        log.warning("frame %d cannot be rendered", number, exc_info=True)
        raise NotRenderable(
            f"frame {number} cannot be rendered ({module.photometric}): {type(exc).__name__}"
        ) from exc


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
T = TypeVar("T")
R = TypeVar("R")


def _map(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``fn`` over ``items``, in a shared pool of render threads when there are several."""
    global _pool
    if len(items) < 2:
        return [fn(i) for i in items]
    with _pool_lock:
        if _pool is None:
            workers = max(1, min(8, os.cpu_count() or 1))
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="render")
    return list(_pool.map(fn, items))


def instance_frames(
    archive: Archive, rec: InstanceRecord, req: RenderRequest, every: bool = False
) -> list[int]:
    """The frames an instance-level request renders.

    ``frames=``, else every frame for GIF (or when ``every``, as for a ZIP), else frame 1.
    """
    module = module_for(archive, rec)
    everything = every or req.media_type == "image/gif"
    default = list(range(1, module.number_of_frames + 1)) if everything else [1]
    return parse_frame_ranges(req.frames, module.number_of_frames, default)


# ---------------------------------------------------------------------------------------------
# several instances: multipart or a ZIP of rendered images, streamed instance by instance

#: Frames of one instance rendered and encoded together; bounds a streamed response's memory.
BATCH = 32


@dataclass(frozen=True, slots=True)
class Item:
    """One instance of a response of several rendered images.

    Attributes:
        rec: The instance.
        stem: ZIP entry name without frame number and extension, e.g.
            ``series-001/image-0003`` (ordinals, never UIDs or patient data); ``""`` at
            instance level, whose entries are ``frame-0001.png`` (``image.gif`` for GIF).
        frames: The frames to render; ``None``: those of an instance in a study or series
            (``frames=``, else frame 1; every frame for GIF).
    """

    rec: InstanceRecord
    stem: str = ""
    frames: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """Encoded images of some frames of one instance (one animated image for GIF)."""

    item: Item
    module: PixelModule
    frames: list[int]
    images: list[bytes]

    @property
    def per_frame(self) -> bool:
        """Whether each image is one frame of a multi-frame instance (not an animated GIF)."""
        return len(self.images) == len(self.frames) and self.module.number_of_frames > 1


def rendered_items(
    archive: Archive, items: Sequence[Item], req: RenderRequest
) -> Iterator[Rendered]:
    """Render instance after instance, :data:`BATCH` frames at a time (GIF: all at once).

    An instance that cannot be rendered (no image, undecodable, the viewport region outside
    it, no such frame) is left out; so are frames that fail to render.

    Raises:
        NotRenderable: Nothing could be rendered (raised before anything is yielded); with one
            item, the error of that item.
    """
    gif = req.media_type == "image/gif"
    first_error: Exception | None = None
    rendered_any = False
    for item in items:
        try:
            module = module_for(archive, item.rec)
            numbers = item.frames or instance_frames(archive, item.rec, req)
        except (NotRenderable, FramesOutside) as exc:
            first_error = first_error or exc
            continue
        step = max(1, len(numbers)) if gif else BATCH
        for i in range(0, len(numbers), step):
            batch = numbers[i : i + step]
            try:
                images = rendered_frames(archive, item.rec, batch, req)
            except (NotRenderable, enc.RegionOutside) as exc:
                first_error = first_error or exc
                continue
            rendered_any = True
            yield Rendered(item, module, batch, images)
    if not rendered_any:
        if len(items) == 1 and first_error is not None:
            raise first_error
        reason = f": {getattr(first_error, 'reason', '')}" if first_error else ""
        raise NotRenderable("no instance here can be rendered" + reason)


class _Sink:
    """A write-only file for :class:`zipfile.ZipFile`; the bytes are taken as they come."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: :meth:`take` hands the bytes on."""

    def close(self) -> None:
        """Nothing to close."""

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def _entry_name(stem: str, number: int, width: int, per_frame: bool, ext: str) -> str:
    if not per_frame:
        return f"{stem or 'image'}.{ext}"
    frame = f"frame-{number:0{width}d}"
    return f"{stem}-{frame}.{ext}" if stem else f"{frame}.{ext}"


def rendered_zip(
    archive: Archive, items: Sequence[Item], req: RenderRequest, max_entries: int
) -> Iterator[bytes]:
    """A ZIP (PKWARE APPNOTE) of rendered images, produced instance by instance.

    Rendered resources of a study or series may be a ZIP of images (our packaging of PS3.18
    §10.4.1.1.3). Entries are stored uncompressed (the images are compressed already), with
    data descriptors, so nothing is seeked and at most :data:`BATCH` encoded frames are held
    at a time; ZIP64 records are written when the archive outgrows 4 GiB. What cannot be
    rendered is left out, as in :func:`rendered_items`.

    Args:
        archive: The archive.
        items: The instances, their entry names and frames, in order.
        req: What to render; ``req.media_type`` is the type of every entry.
        max_entries: Most entries (``DICOMHUB_MAX_FRAMES_PER_REQUEST``).

    Yields:
        Chunks of the ZIP file; the first after the first rendered instance.

    Raises:
        NotRenderable: Nothing could be rendered (before the first chunk); with one item,
            the error of that item.
        InvalidInput: More than ``max_entries`` images.
    """
    sink = _Sink()
    ext = enc.EXTENSIONS[req.media_type]
    stamp = time.gmtime()[:6]
    written = 0
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as zf:
        for out in rendered_items(archive, items, req):
            stem = out.item.stem
            per_frame = out.per_frame or (not stem and len(out.images) == len(out.frames))
            width = max(4, len(str(out.module.number_of_frames)))
            for number, data in zip(out.frames, out.images, strict=False):
                written += 1
                if written > max_entries:
                    raise InvalidInput(
                        f"more than {max_entries} images; ask for fewer (series, frames=)"
                    )
                info = zipfile.ZipInfo(_entry_name(stem, number, width, per_frame, ext), stamp)
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, data)
            yield sink.take()
    yield sink.take()


def encapsulated_pdf(archive: Archive, rec: InstanceRecord) -> bytes:
    """The PDF of an Encapsulated PDF instance (PS3.3 A.45), without its padding byte.

    Raises:
        NotRenderable: The instance is not an encapsulated PDF.
    """
    if rec.sop_class_uid != ENCAPSULATED_PDF:
        raise NotRenderable("the instance is not an encapsulated PDF")
    if "00420011" in rec.bulk():
        data = b"".join(retrieve.bulk_chunks(archive, rec, "00420011"))
    else:  # small documents stay inline in the header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = retrieve.header_dataset(archive, rec).get("EncapsulatedDocument")
        if value is None:
            raise NotRenderable("the encapsulated PDF instance holds no document")
        data = bytes(value)
    end = data.rfind(b"%%EOF")
    if end >= 0 and data[end + 5 :].strip(b"\r\n\x00 ") == b"":
        data = data[: len(data.rstrip(b"\x00"))]
    return data


def renderable(archive: Archive, rec: InstanceRecord) -> bool:
    """Whether the instance has an image whose transfer syntax we decode."""
    try:
        module = module_for(archive, rec)
    except NotRenderable:
        return False
    return module.transfer_syntax in NATIVE_SYNTAXES or can_decode(module.transfer_syntax)


# ---------------------------------------------------------------------------------------------
# transcoding on retrieve (PS3.18 §8.7.3.5.2)


def can_transcode(transfer_syntax: str) -> bool:
    """Whether an instance stored in ``transfer_syntax`` can be sent as Explicit VR LE."""
    if transfer_syntax in NATIVE_SYNTAXES:
        return transfer_syntax != "1.2.840.10008.1.2.2"
    return can_decode(transfer_syntax)


def transcode_explicit_le(archive: Archive, rec: InstanceRecord) -> bytes:
    """The instance as a Part-10 file in Explicit VR Little Endian (decompressed).

    Raises:
        NotRenderable: The pixel data cannot be decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = retrieve.full_dataset(archive, rec)
        if rec.transfer_syntax_uid not in NATIVE_SYNTAXES and "PixelData" in ds:
            try:
                ds.decompress(generate_instance_uid=False)
            except Exception as exc:  # plugin failure: the syntax or the data is the problem
                raise NotRenderable(
                    f"cannot transcode from {syntax_name(rec.transfer_syntax_uid)}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                ) from exc
        ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
        buf = io.BytesIO()
        ds.preamble = bytes(128)
        ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


__all__ = [
    "BATCH",
    "MAX_FRAMES",
    "FramesOutside",
    "Item",
    "RenderRequest",
    "Rendered",
    "check_frame_ranges",
    "decoded_frame",
    "encapsulated_pdf",
    "instance_frames",
    "module_for",
    "parse_frame_ranges",
    "render_dataset",
    "renderable",
    "rendered_frames",
    "rendered_items",
    "rendered_zip",
    "transcode_explicit_le",
]


def render_dataset(
    ds: Any, req: RenderRequest, progress: Callable[[int], None] | None = None
) -> list[tuple[int, bytes]]:
    """Render a data set read from a file: ``(frame number, encoded image)`` per output.

    Frames default to all of them; GIF gives one (animated) image numbered with the first frame.
    Frames are decoded and encoded in parallel threads (numpy, the codecs and zlib release the
    GIL).

    Raises:
        NotRenderable: No image, or undecodable pixel data.
        InvalidInput: Bad ``frames``.
    """
    module = module_of(ds)
    raw = dataset_frames(ds, module)
    numbers = parse_frame_ranges(req.frames, module.number_of_frames, list(range(1, len(raw) + 1)))
    for n in numbers:
        if n > len(raw):
            raise NotRenderable(f"pixel data holds {len(raw)} frames, not {n}")

    def one(n: int) -> Image.Image:
        frame = _render(module, decode_frame(module, raw[n - 1]), n, req.options)
        image = enc.resize(enc.crop(frame, req.region), req.viewport)
        if progress is not None:
            progress(1)
        return image

    images = _map(one, numbers)
    if req.media_type == "image/gif":
        return [(numbers[0], enc.encode(images, req.media_type))]
    blobs = _map(lambda im: enc.encode([im], req.media_type, req.quality), images)
    return list(zip(numbers, blobs, strict=True))
