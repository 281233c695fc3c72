"""Parse a DICOM Part-10 file for ingest (PS3.10 §7.1, PS3.5, PS3.18 §F.2).

:func:`parse_instance` validates the file with the raw element walker
(:mod:`dicomhub.dicom.offsets`), reads the header with pydicom (never the Pixel Data value),
and returns the index columns, the DICOM JSON metadata with bulk markers, and the byte ranges
of every frame and bulk value, so that retrieval can stream straight from the stored file.
"""

from __future__ import annotations

import io
import mmap
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom.dataset import Dataset

from dicomhub.dicom.frames import encapsulated_frames, native_frames
from dicomhub.dicom.json_model import MARKER, dataset_to_json
from dicomhub.dicom.model import ByteRange, ParsedInstance
from dicomhub.dicom.modules import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS, select
from dicomhub.dicom.offsets import ElementLocation, WalkResult, read_file_meta, walk_dataset
from dicomhub.dicom.raw_json import Unsupported, WalkJson, walk_and_convert
from dicomhub.domain.uids import is_valid_uid
from dicomhub.errors import InvalidDicom

__all__ = ["MAX_INFLATED_SIZE", "parse_instance", "zero_preamble"]

#: Media Storage Directory Storage (PS3.10 §8, PS3.3 F.2): an index, not an instance.
DICOMDIR_SOP_CLASS: Final = "1.2.840.10008.1.3.10"
IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose whole data set is deflated (PS3.5 §A.5; JPIP Referenced Deflate).
DEFLATED_TRANSFER_SYNTAXES: Final = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
#: Transfer syntaxes with native (not encapsulated) Pixel Data (PS3.5 §A.1, §A.2, §A.5).
NATIVE_TRANSFER_SYNTAXES: Final = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.1",
        EXPLICIT_VR_BIG_ENDIAN,
        "1.2.840.10008.1.2.1.99",
    }
)
#: Refuse deflated data sets that inflate beyond this (decompression bombs).
MAX_INFLATED_SIZE: Final = 512 * 1024 * 1024

_PREAMBLE: Final = 128
_TS_TAG: Final = 0x00020010
_MS_SOP_CLASS_TAG: Final = 0x00020002
_EXTENDED_OFFSET_TABLE: Final = 0x7FE00001
_PIXEL_DATA_PREFERENCE: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_UID_TAGS: Final = (
    ("SOPClassUID", 0x00080016),
    ("SOPInstanceUID", 0x00080018),
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
)
#: The walk, the DICOM JSON metadata and the SOP Class, SOP Instance, Study and Series UIDs.
_Header = tuple[WalkResult, dict[str, Any], tuple[str, str, str, str]]

_PATIENT_KEYS: Final = {
    "patient_id": "00100020",
    "issuer_of_patient_id": "00100021",
    "patient_name": "00100010",
    "patient_birth_date": "00100030",
    "patient_sex": "00100040",
}
_STUDY_KEYS: Final = {
    "study_date": "00080020",
    "study_time": "00080030",
    "accession_number": "00080050",
    "study_id": "00200010",
    "referring_physician_name": "00080090",
    "study_description": "00081030",
}
_SERIES_TEXT_KEYS: Final = {
    "modality": "00080060",
    "series_description": "0008103E",
    "performed_procedure_step_start_date": "00400244",
    "performed_procedure_step_start_time": "00400245",
}
_INSTANCE_INT_KEYS: Final = {
    "instance_number": "00200013",
    "rows": "00280010",
    "columns": "00280011",
    "bits_allocated": "00280100",
    "number_of_frames": "00280008",
}


def zero_preamble(path: str | os.PathLike[str]) -> None:
    """Overwrite the 128-byte File Preamble with zeros, in place (PS3.10 §7.1).

    The preamble is free-form and may carry executable content (PS3.10 §7.5); zeroing it is
    always allowed. The caller is responsible for fsync.

    Args:
        path: A Part-10 file at least 128 bytes long.

    Raises:
        InvalidDicom: If the file is shorter than the preamble.
    """
    with Path(path).open("r+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < _PREAMBLE:
            raise InvalidDicom("not a DICOM Part 10 file: shorter than the 128-byte preamble")
        f.seek(0)
        f.write(b"\x00" * _PREAMBLE)


def parse_instance(
    path: str | os.PathLike[str],
    *,
    bulk_threshold: int = 1024,
    max_sequence_depth: int = 16,
) -> ParsedInstance:
    """Parse a stored Part-10 file into what ingest indexes and serves.

    Args:
        path: The Part-10 file (PS3.10 §7.1: preamble, ``DICM``, File Meta Information).
        bulk_threshold: Binary values longer than this are bulk data (PS3.18 §F.2.7).
        max_sequence_depth: Maximum nesting of sequences (PS3.5 §7.5) accepted.

    Returns:
        The parsed instance.

    Raises:
        InvalidDicom: For anything that is not a well-formed, storable composite instance.
            No other exception escapes for any file content (opening the path may still
            raise :class:`OSError`).
    """
    with Path(path).open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _PREAMBLE + 4:
            raise InvalidDicom("not a DICOM Part 10 file: too short for preamble and 'DICM'")
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise InvalidDicom(f"cannot map file: {type(exc).__name__}") from exc
        try:
            return _parse(f, mm, size, bulk_threshold, max_sequence_depth)
        except InvalidDicom:
            raise
        except RecursionError as exc:
            raise InvalidDicom("data set nested too deeply") from exc
        except Exception as exc:
            # pydicom messages may quote values (PHI): report only the kind of failure.
            raise InvalidDicom(f"cannot parse DICOM data set ({type(exc).__name__})") from exc
        finally:
            mm.close()


def _parse(
    f: io.BufferedReader,
    mm: mmap.mmap,
    size: int,
    bulk_threshold: int,
    max_depth: int,
) -> ParsedInstance:
    meta = read_file_meta(mm, size)
    ts = meta.text(_TS_TAG)
    if ts is None:
        raise InvalidDicom("File Meta Information has no Transfer Syntax UID (0002,0010)")
    if not is_valid_uid(ts):
        raise InvalidDicom(f"invalid Transfer Syntax UID (0002,0010): {ts[:80]!r}")
    if meta.text(_MS_SOP_CLASS_TAG) == DICOMDIR_SOP_CLASS:
        raise InvalidDicom("a DICOMDIR is a media index, not a storable instance")

    implicit = ts == IMPLICIT_VR_LITTLE_ENDIAN
    little = ts != EXPLICIT_VR_BIG_ENDIAN
    deflated = ts in DEFLATED_TRANSFER_SYNTAXES

    defer_size = max(bulk_threshold, 64)
    fast: WalkJson | None = None
    if not (implicit or deflated or not little):
        try:
            fast = walk_and_convert(
                mm,
                size,
                meta.dataset_offset,
                bulk_threshold=bulk_threshold,
                max_depth=max_depth,
                defer_size=defer_size,
            )
        except Unsupported:
            fast = None
    header = _fast_header(fast, mm) if fast is not None else None
    if header is None:
        header = _pydicom_header(
            f, mm, size, meta.dataset_offset, implicit, little, deflated, bulk_threshold, max_depth
        )
    walk, metadata, (sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid) = (
        header
    )
    # A Media Storage SOP Instance UID (0002,0003) that differs from the data set's SOP
    # Instance UID violates PS3.10 §7.1, but real exports (RT planning systems, some modality
    # writers) do it. The data set is authoritative: it is indexed and the file is kept as is.
    bulk = {} if deflated else walk.bulk
    _add_pixel_elements(metadata, walk.top_level)

    instance: dict[str, str | int | None] = {
        k: _int(metadata, t) for k, t in _INSTANCE_INT_KEYS.items()
    }
    instance["specific_character_set"] = _charset(metadata)

    pixel = next((walk.top_level[t] for t in _PIXEL_DATA_PREFERENCE if t in walk.top_level), None)
    encapsulated = pixel is not None and pixel.items is not None
    frames: tuple[tuple[ByteRange, ...], ...] = ()
    if pixel is not None and not deflated:
        frames = _frames(mm, pixel, walk.top_level, metadata, ts)

    series: dict[str, str | int | None] = {
        k: _text(metadata, t) for k, t in _SERIES_TEXT_KEYS.items()
    }
    series["series_number"] = _int(metadata, "00200011")
    series = {
        "modality": series["modality"],
        "series_number": series["series_number"],
        "series_description": series["series_description"],
        "performed_procedure_step_start_date": series["performed_procedure_step_start_date"],
        "performed_procedure_step_start_time": series["performed_procedure_step_start_time"],
    }
    return ParsedInstance(
        transfer_syntax_uid=ts,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        patient={k: _text(metadata, t) for k, t in _PATIENT_KEYS.items()},
        study={k: _text(metadata, t) for k, t in _STUDY_KEYS.items()},
        series=series,
        instance=instance,
        patient_json=select(metadata, PATIENT_TAGS),
        study_json=select(metadata, STUDY_TAGS),
        series_json=select(metadata, SERIES_TAGS),
        metadata=metadata,
        frames=frames,
        bulk=bulk,
        encapsulated=encapsulated,
        deflated=deflated,
    )


def _inflate(mm: mmap.mmap, start: int, size: int) -> bytes:
    """Inflate a deflated data set (PS3.5 §A.5: raw deflate, RFC 1951), bounded in size."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(mm[start:size], MAX_INFLATED_SIZE)
    except zlib.error as exc:
        raise InvalidDicom(f"corrupt deflated data set: {exc}") from exc
    if inflater.unconsumed_tail:
        raise InvalidDicom(f"deflated data set inflates beyond {MAX_INFLATED_SIZE} bytes")
    return data


def _pydicom_header(
    f: io.BufferedReader,
    mm: mmap.mmap,
    size: int,
    start: int,
    implicit: bool,
    little: bool,
    deflated: bool,
    bulk_threshold: int,
    max_depth: int,
) -> _Header:
    """Walk the data set and read it with pydicom: the general (and reference) path."""
    walk: WalkResult
    if deflated:
        inflated = _inflate(mm, start, size)
        walk = walk_dataset(
            inflated,
            len(inflated),
            0,
            implicit=False,
            little=True,
            bulk_threshold=bulk_threshold,
            max_depth=max_depth,
        )
        del inflated
    else:
        walk = walk_dataset(
            mm,
            size,
            start,
            implicit=implicit,
            little=little,
            bulk_threshold=bulk_threshold,
            max_depth=max_depth,
        )

    f.seek(0)
    ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size=max(bulk_threshold, 64))
    if ds.get((0x0004, 0x1220)) is not None or str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        raise InvalidDicom("a DICOMDIR is a media index, not a storable instance")
    uids = (
        _uid(ds, "SOPClassUID"),
        _uid(ds, "SOPInstanceUID"),
        _uid(ds, "StudyInstanceUID"),
        _uid(ds, "SeriesInstanceUID"),
    )
    metadata = dataset_to_json(
        ds, bulk_uri=None, bulk_threshold=bulk_threshold, bulk_keys=None if deflated else walk.bulk
    )
    return walk, metadata, uids


def _fast_header(fast: WalkJson, buf: mmap.mmap) -> _Header | None:
    """Checks of :func:`_pydicom_header` on the fast path; ``None`` if it cannot decide.

    The four UIDs are read from their raw values exactly as pydicom converts a UI value
    (PS3.5 §9.1: trailing NUL or space padding), so errors and messages are unchanged.
    """
    metadata = fast.metadata
    top = fast.walk.top_level
    texts: dict[str, str | None] = {}
    for keyword, tag in _UID_TAGS:
        if f"{tag:08X}" not in metadata:  # absent, or after Pixel Data: pydicom never read it
            texts[keyword] = None
            continue
        loc = top.get(tag)
        if loc is None or loc.vr != "UI":
            return None
        parts = buf[loc.offset : loc.offset + loc.length].decode("latin-1").rstrip(" \x00")
        values = parts.split("\\")
        if len(values) != 1:
            return None  # multi-valued: pydicom formats a list; let it do so
        texts[keyword] = values[0].strip()
    if "00041220" in metadata or texts["SOPClassUID"] == DICOMDIR_SOP_CLASS:
        raise InvalidDicom("a DICOMDIR is a media index, not a storable instance")
    uids = tuple(_check_uid(texts[k], k) for k, _ in _UID_TAGS)
    return fast.walk, metadata, (uids[0], uids[1], uids[2], uids[3])


def _uid(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        value = None
    return _check_uid(str(value) if value is not None else None, keyword)


def _check_uid(value: str | None, keyword: str) -> str:
    text = value.strip("\x00 ") if value is not None else ""
    if not text:
        raise InvalidDicom(f"missing {keyword}")
    if not is_valid_uid(text):
        raise InvalidDicom(f"invalid {keyword}: {text[:80]!r} is not a UID (PS3.5 §9.1)")
    return text


def _add_pixel_elements(metadata: dict[str, Any], top: Mapping[int, ElementLocation]) -> None:
    """Add the top-level Pixel Data elements that ``stop_before_pixels`` did not read."""
    reorder = False
    # Keys are in tag order; the usual Pixel Data comes after every key read, so appending it
    # keeps the order and the dict is rebuilt only otherwise.
    last = next(reversed(metadata), "")
    for tag in _PIXEL_DATA_PREFERENCE:
        loc = top.get(tag)
        key = f"{tag:08X}"
        if loc is not None and key not in metadata:
            vr = loc.vr if loc.vr in ("OB", "OW", "OF", "OD") else "OW"
            if loc.items is not None:
                vr = "OB"
            elif tag == 0x7FE00010 and vr not in ("OB", "OW"):
                vr = "OW"
            metadata[key] = {"vr": vr, "BulkDataURI": MARKER + key}
            reorder = reorder or key < last
            last = max(last, key)
    if reorder:
        ordered = dict(sorted(metadata.items()))
        metadata.clear()
        metadata.update(ordered)


def _first(metadata: Mapping[str, Any], tag: str) -> Any:
    attr = metadata.get(tag)
    if not isinstance(attr, dict):
        return None
    values = attr.get("Value")
    if not isinstance(values, list) or not values:
        return None
    return values[0]


def _text(metadata: Mapping[str, Any], tag: str) -> str | None:
    value = _first(metadata, tag)
    if value is None:
        return None
    if isinstance(value, dict):  # PN (PS3.18 §F.2.2): Alphabetic group, else the whole name
        alphabetic = value.get("Alphabetic")
        if alphabetic:
            return str(alphabetic)
        groups = [value.get(k) or "" for k in ("Alphabetic", "Ideographic", "Phonetic")]
        whole = "=".join(groups).rstrip("=")
        return whole or None
    text = str(value).strip()
    return text or None


def _int(metadata: Mapping[str, Any], tag: str) -> int | None:
    value = _first(metadata, tag)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _charset(metadata: Mapping[str, Any]) -> str | None:
    attr = metadata.get("00080005")
    values = attr.get("Value") if isinstance(attr, dict) else None
    if not isinstance(values, list) or not values:
        return None
    return "\\".join("" if v is None else str(v) for v in values) or None


def _frames(
    mm: mmap.mmap,
    pixel: ElementLocation,
    top: Mapping[int, ElementLocation],
    metadata: Mapping[str, Any],
    ts: str,
) -> tuple[tuple[ByteRange, ...], ...]:
    number_of_frames = _int(metadata, "00280008")
    if pixel.items is not None:
        eot = top.get(_EXTENDED_OFFSET_TABLE)
        extended: list[int] | None = None
        if eot is not None and eot.length >= 8 and eot.length % 8 == 0:
            raw = bytes(mm[eot.offset : eot.offset + eot.length])
            extended = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
        return encapsulated_frames(
            mm,
            pixel,
            number_of_frames=number_of_frames,
            transfer_syntax_uid=ts,
            extended_offsets=extended,
        )
    if ts not in NATIVE_TRANSFER_SYNTAXES and pixel.tag == 0x7FE00010:
        return ()  # defined-length Pixel Data under an encapsulated transfer syntax: not framed
    return native_frames(
        pixel,
        rows=_int(metadata, "00280010"),
        columns=_int(metadata, "00280011"),
        samples_per_pixel=_int(metadata, "00280002"),
        bits_allocated=_int(metadata, "00280100"),
        number_of_frames=number_of_frames,
        photometric_interpretation=_text(metadata, "00280004"),
    )
