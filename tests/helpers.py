"""Helpers shared by the integration and end-to-end tests.

DICOMweb URLs and STOW-RS request bodies, reading multipart responses, synthetic Part-10
instances, ingesting a file directly, and running the ``dicomhub`` command line.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from sqlalchemy import Connection, CursorResult
from starlette.testclient import TestClient

from dicomhub.cli.main import main
from dicomhub.config import Settings
from dicomhub.services import ingest
from dicomhub.services.archive import Archive, blob_store_of
from dicomhub.services.spool import spool_file
from dicomhub.storage.blobs import BlobStore
from dicomhub.web.multipart import MultipartParser, PartData, PartEnd, PartStart, parse_content_type
from tests.samples import SAMPLES

ROOT = "/dicomweb"

# ---------------------------------------------------------------------------------------------
# DICOMweb URLs


def study_url(ds: Dataset) -> str:
    """The WADO-RS path of the study of ``ds``."""
    return f"{ROOT}/studies/{ds.StudyInstanceUID}"


def series_url(ds: Dataset) -> str:
    """The WADO-RS path of the series of ``ds``."""
    return f"{study_url(ds)}/series/{ds.SeriesInstanceUID}"


def instance_url(ds: Dataset) -> str:
    """The WADO-RS path of the instance ``ds``."""
    return f"{series_url(ds)}/instances/{ds.SOPInstanceUID}"


# ---------------------------------------------------------------------------------------------
# STOW-RS requests

Part = bytes | tuple[bytes, str | None]


def dicom_multipart_type(boundary: str) -> str:
    """The Content-Type of a multipart/related application/dicom body with ``boundary``."""
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def multipart_body(parts: Iterable[Part], boundary: str) -> bytes:
    """A multipart/related body; a part is bytes, or (bytes, Content-Type or None)."""
    out = bytearray()
    for part in parts:
        data, ctype = (part, "application/dicom") if isinstance(part, bytes) else part
        out += f"--{boundary}\r\n".encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def stow_samples(
    client: TestClient, *files: str, boundary: str, quote_boundary: bool = False
) -> None:
    """STOW-RS the given sample files in one request, which must store them all (200)."""
    param = f'"{boundary}"' if quote_boundary else boundary
    resp = client.post(
        f"{ROOT}/studies",
        content=multipart_body([(SAMPLES / f).read_bytes() for f in files], boundary),
        headers={"Content-Type": dicom_multipart_type(param)},
    )
    assert resp.status_code == 200, resp.text[:500]


# ---------------------------------------------------------------------------------------------
# multipart responses


def multipart_parts(resp: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, body) of every part of a multipart/related response."""
    media, params = parse_content_type(resp.headers["content-type"])
    assert media == "multipart/related", resp.headers["content-type"]
    parser = MultipartParser(params["boundary"].encode())
    out: list[tuple[dict[str, str], bytes]] = []
    headers: dict[str, str] = {}
    data = bytearray()
    for event in parser.feed(resp.content) + parser.close():
        if isinstance(event, PartStart):
            headers, data = event.headers, bytearray()
        elif isinstance(event, PartData):
            data += event.data
        elif isinstance(event, PartEnd):
            out.append((headers, bytes(data)))
    return out


def single_part(resp: httpx.Response) -> bytes:
    """The exact bytes of the one part of a multipart response."""
    _, params = parse_content_type(resp.headers["content-type"])
    parser = MultipartParser(params["boundary"].encode())
    events = parser.feed(resp.content) + parser.close()
    assert sum(isinstance(e, PartStart) for e in events) == 1
    return b"".join(e.data for e in events if isinstance(e, PartData))


# ---------------------------------------------------------------------------------------------
# Part-10 files


def zeroed(data: bytes) -> bytes:
    """A Part-10 file with its preamble zeroed, as the archive stores it."""
    return bytes(128) + data[128:]


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` written as a Part-10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def set_file_meta(ds: Dataset) -> None:
    """Give ``ds`` File Meta Information: Explicit VR Little Endian, its own SOP UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def ct_image(
    *,
    sop: str,
    study: str,
    series: str,
    patient_name: str,
    patient_id: str,
    size: int,
    bits_allocated: int,
    bits_stored: int,
    pixel_data: bytes,
) -> Dataset:
    """A minimal CT Image (``size`` x ``size``, unsigned MONOCHROME2) with File Meta."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    set_file_meta(ds)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixel_data
    return ds


# ---------------------------------------------------------------------------------------------
# the archive without HTTP, and the command line


def ingest_file(archive: Archive, tenant_id: int, path: Path) -> ingest.Stored:
    """Spool ``path`` and store it in ``archive`` for ``tenant_id``, as STOW-RS would."""
    settings = archive.settings
    spool, sha = spool_file(path, settings.tmp_dir, settings.max_instance_bytes)
    return ingest.store(archive, tenant_id, spool, sha)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``dicomhub`` in-process; return its exit code and standard output."""
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


def run_dicomhub(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``dicomhub`` script in a child process (output captured as text)."""
    exe = Path(sys.executable).parent / "dicomhub"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, check=False
    )


def driver_sql(conn: Connection, sql: str, params: Sequence[Any] = ()) -> CursorResult[Any]:
    """Run raw SQL written with ``?`` placeholders on either database driver."""
    if params and conn.dialect.paramstyle in ("format", "pyformat"):
        sql = sql.replace("?", "%s")
    return conn.exec_driver_sql(sql, tuple(params))


# ---------------------------------------------------------------------------------------------
# blobs, on whichever store the settings name


@dataclass(frozen=True)
class StoredBlob:
    """One blob of a store, with the file-like checks the tests use."""

    store: BlobStore
    key: str

    def read_bytes(self) -> bytes:
        """The whole blob."""
        return b"".join(self.store.open_range(self.key))

    def exists(self) -> bool:
        """Whether the blob exists."""
        return self.store.size(self.key) is not None

    is_file = exists


def stored_blob(settings: Settings, key: str) -> StoredBlob:
    """The blob ``key`` of the store of ``settings`` (which need not exist)."""
    return StoredBlob(blob_store_of(settings), key)


def stored_blobs(settings: Settings) -> list[StoredBlob]:
    """Every blob in the store of ``settings``, by key."""
    store = blob_store_of(settings)
    return [StoredBlob(store, k) for k in sorted(store.keys())]
