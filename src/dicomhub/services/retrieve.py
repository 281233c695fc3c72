"""Retrieval: instances, metadata, frames and bulk data (PS3.18 §10.4, WADO-RS).

Everything is answered from the index plus ranged blob reads: metadata is the DICOM JSON stored
at ingest, frame N of a multi-frame instance is a range read of the offsets indexed at ingest
(never a re-parse of a 70 MB file), bulk data likewise.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from dicomhub.dicom.json_model import render_bulk_markers
from dicomhub.dicom.model import ByteRange
from dicomhub.domain.query import Query
from dicomhub.errors import InvalidInput, NotAcceptable, NotFound
from dicomhub.services.archive import Archive
from dicomhub.storage.blobs.reader import open_blob_reader
from dicomhub.storage.index import queries
from dicomhub.storage.index import store as index
from dicomhub.storage.index.records import InstanceRecord

BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", BIG_ENDIAN, DEFLATED}


def find_instances(
    archive: Archive,
    tenant_id: int,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[InstanceRecord]:
    """The stored instances at the given level; NotFound when there are none."""
    with archive.db.read() as conn:
        records = index.instances(conn, tenant_id, study_uid, series_uid, sop_uid)
    if not records:
        raise NotFound("no such resource")
    return records


def instance_url(base: str, rec: InstanceRecord) -> str:
    """The WADO-RS URL of an instance under the DICOMweb root ``base``."""
    return f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}"


def metadata_texts(archive: Archive, records: list[InstanceRecord], base: str) -> list[str]:
    """The DICOM JSON text of each instance with absolute BulkDataURIs (PS3.18 §10.4.1.1.2)."""
    with archive.db.read() as conn:
        texts = index.metadata_json(conn, [r.pk for r in records])
    return [
        render_bulk_markers(texts[r.pk], instance_url(base, r)) for r in records if r.pk in texts
    ]


def is_encapsulated(rec: InstanceRecord) -> bool:
    """Whether the instance's pixel data is encapsulated (compressed) (PS3.5 §A.4)."""
    return rec.transfer_syntax_uid not in NATIVE_SYNTAXES


def parse_frame_list(text: str, limit: int) -> list[int]:
    """Parse ``1,3,5`` (1-based frame numbers, PS3.18 §8.3.3.1.4)."""
    parts = text.split(",")
    if len(parts) > limit:
        raise InvalidInput(f"at most {limit} frames per request")
    numbers: list[int] = []
    for part in parts:
        p = part.strip()
        if not p.isdigit() or len(p) > 9 or int(p) < 1:
            raise InvalidInput("frame numbers must be positive integers")
        numbers.append(int(p))
    return numbers


def frame_count(rec: InstanceRecord) -> int:
    """Number of frames as indexed (falls back to NumberOfFrames)."""
    frames = rec.frames()
    if frames:
        return len(frames)
    return rec.number_of_frames or 0


def frame_bytes(archive: Archive, rec: InstanceRecord, number: int) -> bytes:
    """The pixel data of frame ``number`` (1-based) as stored (native or encapsulated).

    Native big-endian frames are returned in little-endian byte order, as
    ``application/octet-stream`` frames are defined for Explicit VR Little Endian.
    """
    frames = rec.frames()
    if frames:
        if number > len(frames):
            raise NotFound(f"frame {number} does not exist (the instance has {len(frames)})")
        data = b"".join(_read(archive, rec, r) for r in frames[number - 1])
        if rec.transfer_syntax_uid == BIG_ENDIAN:
            data = _swap_to_little(archive, rec, data)
        return data
    return _frame_by_parsing(archive, rec, number)


def _read(archive: Archive, rec: InstanceRecord, r: ByteRange) -> bytes:
    return archive.blobs.read_range(rec.blob_key, r.offset, r.length)


def _open_dataset(archive: Archive, rec: InstanceRecord, stop_before_pixels: bool = False):  # type: ignore[no-untyped-def]
    import pydicom

    path = archive.blobs.local_path(rec.blob_key)
    if path is not None:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    if stop_before_pixels:  # remote store: the header costs a few ranged reads, not the object
        with open_blob_reader(archive.blobs, rec.blob_key, rec.size) as f:
            return pydicom.dcmread(f, stop_before_pixels=True)
    data = b"".join(archive.blobs.open_range(rec.blob_key))
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)


def header_dataset(archive: Archive, rec: InstanceRecord) -> Any:
    """The instance's data set without pixel data (for the rendering pipeline's pixel module)."""
    return _open_dataset(archive, rec, stop_before_pixels=True)


def full_dataset(archive: Archive, rec: InstanceRecord) -> Any:
    """The whole data set (fallback for instances whose frames cannot be range-read)."""
    return _open_dataset(archive, rec)


def can_transcode(transfer_syntax: str) -> bool:
    """Whether an instance in ``transfer_syntax`` can be sent as Explicit VR Little Endian.

    Transcoding on retrieve (PS3.18 §8.7.3.5.2), for WADO-RS and DIMSE alike.
    """
    from dicomhub.services.render import can_transcode as render_can_transcode

    return render_can_transcode(transfer_syntax)


def transcode(archive: Archive, rec: InstanceRecord, transfer_syntax: str) -> bytes:
    """The instance as a Part-10 file in ``transfer_syntax`` (Explicit VR Little Endian only).

    Raises:
        NotAcceptable: Another target transfer syntax.
        NotRenderable: The stored pixel data cannot be decoded.
    """
    from dicomhub.services.render import EXPLICIT_LE, transcode_explicit_le

    if transfer_syntax != EXPLICIT_LE:
        raise NotAcceptable(f"cannot transcode to transfer syntax {transfer_syntax}")
    return transcode_explicit_le(archive, rec)


def _swap_to_little(archive: Archive, rec: InstanceRecord, data: bytes) -> bytes:
    ds = _open_dataset(archive, rec, stop_before_pixels=True)
    bits = int(getattr(ds, "BitsAllocated", 8))
    if bits not in (16, 32, 64):
        return data
    import numpy as np

    arr = np.frombuffer(data, dtype=f">u{bits // 8}")
    return arr.astype(f"<u{bits // 8}").tobytes()


def _frame_by_parsing(archive: Archive, rec: InstanceRecord, number: int) -> bytes:
    """Fallback for instances whose frames could not be indexed (deflated, ambiguous)."""
    from pydicom.encaps import generate_frames

    ds = _open_dataset(archive, rec)
    if "PixelData" not in ds:
        raise InvalidInput("the instance has no pixel data")
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if number > n:
        raise NotFound(f"frame {number} does not exist (the instance has {n})")
    if is_encapsulated(rec):
        for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=n), start=1):
            if i == number:
                return bytes(frame)
        raise NotFound(f"frame {number} could not be located")
    pixel: bytes = ds.PixelData
    bits = int(getattr(ds, "BitsAllocated", 8))
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    frame_bits = int(ds.Rows) * int(ds.Columns) * samples * bits
    if frame_bits % 8 == 0:
        size = frame_bits // 8
        return pixel[(number - 1) * size : number * size]
    # BitsAllocated 1 with frames that do not end on a byte boundary (PS3.5 §8.1.1): the
    # frame's bits, re-packed to start at bit 0 of its first byte.
    import numpy as np

    start = (number - 1) * frame_bits
    first, last = start // 8, (start + frame_bits + 7) // 8
    packed = np.frombuffer(pixel[first:last], dtype=np.uint8)
    unpacked = np.unpackbits(packed, bitorder="little")
    offset = start - first * 8
    return np.packbits(unpacked[offset : offset + frame_bits], bitorder="little").tobytes()


_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def bulk_chunks(archive: Archive, rec: InstanceRecord, key: str) -> Iterator[bytes]:
    """The value of a bulk data element, in little-endian byte order (PS3.18 §10.4.1.1.5).

    Usually a ranged read of the offsets indexed at ingest. A deflated data set has no usable
    offsets, and a big-endian one must be byte-swapped per its VR (PS3.18 §8.7.3.3.1): both are
    read whole (bounded by the instance size limit).
    """
    r = rec.bulk().get(key)
    if rec.transfer_syntax_uid == DEFLATED:
        return iter([_bulk_by_parsing(archive, rec, key)])
    if r is None:
        raise NotFound("no such bulk data")
    if rec.transfer_syntax_uid == BIG_ENDIAN:
        width = _SWAP_WIDTH.get(_vr_at(archive, rec, key) or "", 1)
        data = archive.blobs.read_range(rec.blob_key, r.offset, r.length)
        return iter([_swap(data, width)])
    return archive.blobs.open_range(rec.blob_key, r.offset, r.length)


def _swap(data: bytes, width: int) -> bytes:
    if width == 1 or len(data) % width:
        return data
    import numpy as np

    return np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _vr_at(archive: Archive, rec: InstanceRecord, key: str) -> str | None:
    """The VR of the bulk element at ``key`` (``TTTTTTTT`` or ``SSSSSSSS/i/TTTTTTTT``)."""
    import json

    with archive.db.read() as conn:
        text = index.metadata_json(conn, [rec.pk]).get(rec.pk)
    if text is None:
        return None
    node: object = json.loads(text)
    parts = key.split("/")
    for i in range(0, len(parts), 2):
        if not isinstance(node, dict) or parts[i] not in node:
            return None
        elem = node[parts[i]]
        if i + 1 == len(parts):
            vr = elem.get("vr") if isinstance(elem, dict) else None
            return vr if isinstance(vr, str) else None
        items = elem.get("Value", []) if isinstance(elem, dict) else []
        idx = int(parts[i + 1]) if parts[i + 1].isdigit() else -1
        if not 0 <= idx < len(items):
            return None
        node = items[idx]
    return None


def _bulk_by_parsing(archive: Archive, rec: InstanceRecord, key: str) -> bytes:
    """Find a bulk value by reading the whole data set (deflated instances)."""
    ds = _open_dataset(archive, rec)
    parts = key.split("/")
    try:
        for i in range(0, len(parts) - 1, 2):
            ds = ds[int(parts[i], 16)].value[int(parts[i + 1])]
        value = ds[int(parts[-1], 16)].value
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise NotFound("no such bulk data") from exc
    if not isinstance(value, bytes):
        raise NotFound("no such bulk data")
    return value


def stream_blob(archive: Archive, rec: InstanceRecord) -> Iterator[bytes]:
    """The stored Part-10 file in chunks."""
    return archive.blobs.open_range(rec.blob_key)


def match_instances(archive: Archive, tenant_id: int, query: Query) -> list[InstanceRecord]:
    """The stored instances an instance-level ``query`` matches (C-MOVE, C-GET, PS3.4 C.4.2).

    Raises:
        InvalidInput: more than ``query.limit`` instances match.
    """
    with archive.db.read() as conn:
        rows, truncated = queries.search_rows(conn, query, tenant_id)
        if truncated:
            raise InvalidInput(f"more than {query.limit} instances match")
        wanted: dict[str, set[str]] = {}
        for row in rows:
            wanted.setdefault(str(row["study_uid"]), set()).add(str(row["sop_uid"]))
        out: list[InstanceRecord] = []
        for study_uid, sops in wanted.items():
            out += [r for r in index.instances(conn, tenant_id, study_uid) if r.sop_uid in sops]
    return out
