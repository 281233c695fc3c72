"""The S3 blob store against a real SeaweedFS server (``weed mini`` on loopback).

Round trip, ranged reads, create-only writes, checksums in both directions, multipart upload
(threshold lowered), idempotent delete, listing isolated by prefix, bounded retries, and an
archive on SQLite + S3 that stores samples through ingest and serves them byte-identical through
WADO-RS, with a clean fsck.
"""

from __future__ import annotations

import io
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from botocore.exceptions import ClientError
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.errors import IntegrityError, Unavailable
from dicomhub.services import fsck as fsck_service
from dicomhub.services import retrieve
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.storage.blobs import open_blob_store
from dicomhub.storage.blobs.keys import new_key, new_keys
from dicomhub.storage.blobs.reader import open_blob_reader
from dicomhub.storage.blobs.s3 import S3BlobStore
from dicomhub.web.app import create_app
from tests.backends.blobs import blob_exists, blob_keys, overwrite_blob, read_blob, remove_blob
from tests.backends.seaweed import SeaweedInfo, s3_settings_overrides
from tests.conftest import free_port
from tests.helpers import (
    ct_image,
    ingest_file,
    instance_url,
    multipart_parts,
    part10_bytes,
    zeroed,
)
from tests.integration.test_wado import BIG_ENDIAN_MULTI, DEFLATED, NATIVE_MULTI
from tests.samples import CT_SMALL, SAMPLES

MiB = 1024 * 1024

# The store's own tests do not touch the index: once, not once per index backend.
index_independent = pytest.mark.sqlite_only


def make_store(info: SeaweedInfo, prefix: str | None = None, **kwargs: Any) -> S3BlobStore:
    options: dict[str, Any] = {
        "endpoint": info["endpoint"],
        "region": info["region"],
        "access_key": info["access_key"],
        "secret_key": info["secret_key"],
        "path_style": True,
        "multipart_threshold": 6 * MiB,
        "part_size": 5 * MiB,
    }
    options.update(kwargs)
    return S3BlobStore(info["bucket"], prefix or secrets.token_hex(6), **options)


@pytest.fixture
def store(seaweed_s3: SeaweedInfo) -> Iterator[S3BlobStore]:
    s = make_store(seaweed_s3)
    yield s
    s.close()


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"spool-{secrets.token_hex(4)}"
    path.write_bytes(data)
    return path


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def client_error(code: str, status: int, operation: str) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


# ---------------------------------------------------------------------------------------------
# the store on its own


@index_independent
def test_round_trip(store: S3BlobStore, tmp_path: Path) -> None:
    data = random_bytes(300_000)
    key = new_key()
    path = write(tmp_path, data)
    store.put_file(key, path)
    assert not path.exists()  # the spool is consumed
    assert store.size(key) == len(data)
    assert b"".join(store.open_range(key)) == data
    assert store.local_path(key) is None
    assert list(store.keys()) == [key]


@index_independent
def test_ranged_reads(store: S3BlobStore, tmp_path: Path) -> None:
    data = random_bytes(3 * MiB + 17)
    key = new_key()
    store.put_file(key, write(tmp_path, data))
    assert store.read_range(key, 0, 10) == data[:10]
    assert store.read_range(key, 1000, 5000) == data[1000:6000]
    assert store.read_range(key, len(data) - 3, 3) == data[-3:]
    chunks = list(store.open_range(key, 5, 2 * MiB + 1))
    assert all(len(c) <= MiB for c in chunks)
    assert b"".join(chunks) == data[5 : 5 + 2 * MiB + 1]
    assert b"".join(store.open_range(key, MiB)) == data[MiB:]
    assert list(store.open_range(key, 10, 0)) == []
    assert list(store.open_range(key, len(data))) == []  # to the end, from the end
    with pytest.raises(IntegrityError, match="shorter"):
        store.read_range(key, len(data) - 3, 10)
    with pytest.raises(IntegrityError, match="shorter"):
        store.read_range(key, len(data) + 10, 1)
    missing = new_key()
    assert store.size(missing) is None
    with pytest.raises(IntegrityError, match="missing"):
        store.read_range(missing, 0, 1)
    with pytest.raises(IntegrityError, match="missing"):
        list(store.open_range(missing))


@index_independent
def test_create_only(store: S3BlobStore, tmp_path: Path) -> None:
    key = new_key()
    first = random_bytes(1000)
    store.put_file(key, write(tmp_path, first))
    second = write(tmp_path, random_bytes(1000))
    with pytest.raises(IntegrityError, match="collision"):
        store.put_file(key, second)
    assert second.exists()  # not consumed on failure
    assert store.read_range(key, 0, 1000) == first


class CorruptingStore(S3BlobStore):
    """Sends other bytes than those it hashed (a flipped bit on the way)."""

    def _wire(self, data: bytes) -> bytes:
        changed = bytearray(data)
        changed[len(changed) // 2] ^= 0x01
        return bytes(changed)


@index_independent
def test_corrupted_upload_is_rejected(seaweed_s3: SeaweedInfo, tmp_path: Path) -> None:
    store = CorruptingStore(
        seaweed_s3["bucket"],
        secrets.token_hex(6),
        endpoint=seaweed_s3["endpoint"],
        access_key=seaweed_s3["access_key"],
        secret_key=seaweed_s3["secret_key"],
        multipart_threshold=6 * MiB,
        part_size=5 * MiB,
    )
    for size in (50_000, 7 * MiB):  # single PUT and multipart
        key = new_key()
        with pytest.raises(IntegrityError, match="other bytes"):
            store.put_file(key, write(tmp_path, random_bytes(size)))
        assert store.size(key) is None
    assert list(store.keys()) == []
    store.close()


@index_independent
def test_wrong_checksum_in_answer_is_detected(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = store._client.put_object

    def lying_put(**kwargs: Any) -> Any:
        answer = original(**kwargs)
        answer["ChecksumSHA256"] = "AAAA" + answer.get("ChecksumSHA256", "")[4:]
        return answer

    monkeypatch.setattr(store._client, "put_object", lying_put)
    key = new_key()
    with pytest.raises(IntegrityError, match="checksum"):
        store.put_file(key, write(tmp_path, random_bytes(2000)))
    assert store.size(key) is None  # the unverified object was removed


@index_independent
def test_multipart_upload(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("create_multipart_upload", "upload_part", "complete_multipart_upload"):
        original = getattr(store._client, name)

        def spy(*, _original: Callable[..., Any] = original, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return _original(**kw)

        monkeypatch.setattr(store._client, name, spy)
    data = random_bytes(12 * MiB + 123)
    key = new_key()
    store.put_file(key, write(tmp_path, data))
    assert calls == [
        "create_multipart_upload",
        "upload_part",
        "upload_part",
        "upload_part",
        "complete_multipart_upload",
    ]
    assert store.size(key) == len(data)
    assert b"".join(store.open_range(key)) == data
    boundary = 5 * MiB
    assert store.read_range(key, boundary - 10, 20) == data[boundary - 10 : boundary + 10]
    head = store._client.head_object(Bucket=store.bucket, Key=store.prefix + key)
    assert head["ETag"].strip('"').endswith("-3")
    assert len(head["Metadata"]["sha256"]) == 64
    with pytest.raises(IntegrityError, match="collision"):
        store.put_file(key, write(tmp_path, data))


@index_independent
def test_failed_multipart_upload_is_aborted(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = store._client.upload_part

    def failing_part(**kw: Any) -> Any:
        if kw["PartNumber"] == 2:
            raise client_error("AccessDenied", 403, "UploadPart")
        return original(**kw)

    monkeypatch.setattr(store._client, "upload_part", failing_part)
    key = new_key()
    with pytest.raises(Unavailable, match="AccessDenied"):
        store.put_file(key, write(tmp_path, random_bytes(11 * MiB)))
    assert store.size(key) is None
    uploads = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert not uploads.get("Uploads")


@index_independent
def test_delete_is_idempotent(store: S3BlobStore, tmp_path: Path) -> None:
    key = new_key()
    store.put_file(key, write(tmp_path, b"x" * 100))
    store.delete(key)
    assert store.size(key) is None
    store.delete(key)
    store.delete(new_key())
    assert list(store.keys()) == []


@index_independent
def test_keys_are_isolated_by_prefix(seaweed_s3: SeaweedInfo, tmp_path: Path) -> None:
    base = secrets.token_hex(4)
    one, ten = make_store(seaweed_s3, f"{base}1"), make_store(seaweed_s3, f"{base}10/")
    keys_one, keys_ten = new_keys(3), new_keys(2)
    for k in keys_one:
        one.put_file(k, write(tmp_path, b"1"))
    for k in keys_ten:
        ten.put_file(k, write(tmp_path, b"10"))
    # An object under the prefix that is not a blob key is not listed.
    one._client.put_object(Bucket=one.bucket, Key=f"{one.prefix}README", Body=b"not a blob")
    assert sorted(one.keys()) == sorted(keys_one)
    assert sorted(ten.keys()) == sorted(keys_ten)
    assert one.size(keys_ten[0]) is None
    one.close()
    ten.close()


@index_independent
def test_listing_pages(store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = store._client.list_objects_v2
    monkeypatch.setattr(store._client, "list_objects_v2", lambda **kw: original(**kw, MaxKeys=2))
    keys = new_keys(5)
    store.put_files([(k, write(tmp_path, k.encode())) for k in keys])
    assert sorted(store.keys()) == sorted(keys)


@index_independent
def test_put_files_in_parallel(store: S3BlobStore, tmp_path: Path) -> None:
    items = [(k, write(tmp_path, random_bytes(10_000 + i))) for i, k in enumerate(new_keys(8))]
    store.put_files(items)
    for i, (key, path) in enumerate(items):
        assert not path.exists()
        assert store.size(key) == 10_000 + i


@index_independent
def test_put_files_raises_if_any_fails(store: S3BlobStore, tmp_path: Path) -> None:
    taken = new_key()
    store.put_file(taken, write(tmp_path, b"first"))
    items = [(k, write(tmp_path, b"data")) for k in new_keys(3)] + [
        (taken, write(tmp_path, b"second"))
    ]
    with pytest.raises(IntegrityError, match="collision"):
        store.put_files(items)
    assert store.read_range(taken, 0, 5) == b"first"


@index_independent
def test_blob_reader_seeks_and_reads_lazily(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(2 * MiB)
    key = new_key()
    store.put_file(key, write(tmp_path, data))
    fetched: list[int] = []
    original = store.read_range

    def counting(k: str, offset: int, length: int) -> bytes:
        fetched.append(length)
        return original(k, offset, length)

    monkeypatch.setattr(store, "read_range", counting)
    with open_blob_reader(store, key, len(data)) as f:
        assert f.read(10) == data[:10]
        f.seek(MiB)
        assert f.read(100) == data[MiB : MiB + 100]
        assert f.tell() == MiB + 100
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        assert f.read(1) == b""
    assert sum(fetched) < len(data) // 2


# ---------------------------------------------------------------------------------------------
# retries


@index_independent
def test_unreachable_store_fails_fast_after_bounded_retries(tmp_path: Path) -> None:
    sleeps: list[float] = []
    store = S3BlobStore(
        "bucket",
        "p",
        endpoint=f"http://127.0.0.1:{free_port()}",  # nothing listens: connection refused
        access_key="AK",
        secret_key="SK",
        max_attempts=4,
        backoff_base=0.01,
        backoff_cap=0.05,
        sleep=sleeps.append,
    )
    key = new_key()
    started = time.monotonic()
    for call in (
        lambda: store.size(key),
        lambda: store.put_file(key, write(tmp_path, b"data")),
        lambda: store.read_range(key, 0, 1),
        lambda: store.delete(key),
        lambda: list(store.keys()),
    ):
        sleeps.clear()
        with pytest.raises(Unavailable, match=r"unavailable.*failed 4 times") as info:
            call()
        assert len(sleeps) == 3
        assert all(0 <= s <= 0.05 for s in sleeps)
        assert "SK" not in info.value.reason
    assert time.monotonic() - started < 10
    store.close()


@index_independent
def test_client_errors_are_not_retried(seaweed_s3: SeaweedInfo, tmp_path: Path) -> None:
    sleeps: list[float] = []
    store = make_store(seaweed_s3, secret_key="wrong-secret", sleep=sleeps.append)
    with pytest.raises(Unavailable, match="refused") as info:
        store.put_file(new_key(), write(tmp_path, b"data"))
    assert sleeps == []
    assert "wrong-secret" not in info.value.reason
    store.close()


@index_independent
def test_transient_server_errors_are_retried(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    store._sleep = sleeps.append
    original = store._client.put_object
    failures = iter([503, 500])

    def flaky_put(**kw: Any) -> Any:
        status = next(failures, None)
        if status is not None:
            raise client_error("SlowDown", status, "PutObject")
        return original(**kw)

    monkeypatch.setattr(store._client, "put_object", flaky_put)
    key = new_key()
    store.put_file(key, write(tmp_path, b"hello"))
    assert len(sleeps) == 2
    assert store.read_range(key, 0, 5) == b"hello"


class BreakingBody:
    """A GET body that delivers ``good`` bytes, then loses the connection."""

    def __init__(self, body: Any, good: int) -> None:
        self._body = body
        self._good = good

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        from botocore.exceptions import ResponseStreamingError

        yield self._body.read(self._good)
        raise ResponseStreamingError(error="connection reset")

    def close(self) -> None:
        self._body.close()


@index_independent
def test_interrupted_download_resumes_where_it_broke(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(3 * MiB)
    key = new_key()
    store.put_file(key, write(tmp_path, data))
    store._sleep = lambda s: None
    ranges: list[tuple[int, int | None]] = []
    original = store._get

    def breaking_get(name: str, offset: int, end: int | None) -> Any:
        ranges.append((offset, end))
        body = original(name, offset, end)
        return BreakingBody(body, 1000) if len(ranges) <= 2 else body

    monkeypatch.setattr(store, "_get", breaking_get)
    assert b"".join(store.open_range(key, 10)) == data[10:]
    assert ranges == [(10, None), (1010, None), (2010, None)]
    ranges.clear()
    store.max_attempts = 2
    with pytest.raises(Unavailable):
        b"".join(store.open_range(key, 0, 5000))


@index_independent
def test_lost_answer_then_retry_is_recognised(
    store: S3BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PUT landed but its answer was lost; the retry's 412 is our own object: success."""
    from botocore.exceptions import ReadTimeoutError

    store._sleep = lambda s: None
    original = store._client.put_object
    calls = 0

    def lose_first_answer(**kw: Any) -> Any:
        nonlocal calls
        calls += 1
        answer = original(**kw)
        if calls == 1:
            raise ReadTimeoutError(endpoint_url="http://s3")
        return answer

    monkeypatch.setattr(store._client, "put_object", lose_first_answer)
    key = new_key()
    store.put_file(key, write(tmp_path, b"payload"))
    assert calls == 2
    assert store.read_range(key, 0, 7) == b"payload"


# ---------------------------------------------------------------------------------------------
# an archive on SQLite + S3, end to end


@index_independent
def test_open_blob_store_from_url(seaweed_s3: SeaweedInfo) -> None:
    store = open_blob_store(
        f"s3://{seaweed_s3['bucket']}/some/prefix/",
        s3_endpoint=seaweed_s3["endpoint"],
        s3_access_key=seaweed_s3["access_key"],
        s3_secret_key=seaweed_s3["secret_key"],
    )
    assert isinstance(store, S3BlobStore)
    assert store.prefix == "some/prefix/"
    assert seaweed_s3["secret_key"] not in repr(store)
    store.close()


def test_archive_on_s3_end_to_end(seaweed_s3: SeaweedInfo, tmp_path: Path) -> None:
    prefix = f"e2e-{secrets.token_hex(4)}"
    settings = Settings(
        data_dir=tmp_path / "data", run_workers=False, **s3_settings_overrides(seaweed_s3, prefix)
    )
    assert seaweed_s3["secret_key"] not in repr(settings)
    archive = Archive.open(settings)
    try:
        assert isinstance(archive.blobs, S3BlobStore)
        rels = [CT_SMALL, NATIVE_MULTI, BIG_ENDIAN_MULTI, DEFLATED]
        for rel in rels:
            ingest_file(archive, DEFAULT_TENANT, SAMPLES / rel)
        assert len(list(archive.blobs.keys())) == len(rels)
        assert not list(settings.tmp_dir.glob("spool-*"))  # spools consumed
        with TestClient(create_app(settings, archive), raise_server_exceptions=False) as client:
            for rel in rels:
                original = (SAMPLES / rel).read_bytes()
                ds = pydicom.dcmread(SAMPLES / rel, stop_before_pixels=True)
                url = instance_url(ds)
                resp = client.get(url, headers={"Accept": "application/dicom"})
                assert resp.status_code == 200, resp.text[:300]
                assert resp.content == zeroed(original), rel
                meta = client.get(f"{url}/metadata")
                assert meta.status_code == 200
                assert meta.json()[0]["00080018"]["Value"] == [ds.SOPInstanceUID]
            # Frames: indexed ranges (native), byte-swapped (big endian: parses the header).
            for rel in (NATIVE_MULTI, BIG_ENDIAN_MULTI):
                ds = pydicom.dcmread(SAMPLES / rel)
                resp = client.get(f"{instance_url(ds)}/frames/2", headers={"Accept": "*/*"})
                assert resp.status_code == 200, resp.text[:300]
                ((_, data),) = multipart_parts(resp)
                assert len(data) == len(ds.PixelData) // int(ds.NumberOfFrames)
            # Bulk data of a deflated instance is found by parsing the whole downloaded blob.
            ds = pydicom.dcmread(SAMPLES / DEFLATED)
            meta = client.get(f"{instance_url(ds)}/metadata").json()[0]
            uri = meta["7FE00010"]["BulkDataURI"]
            resp = client.get(uri, headers={"Accept": "application/octet-stream"})
            assert resp.status_code == 200, resp.text[:300]
            assert resp.content == bytes(ds.PixelData)
        # A header costs a few ranged reads, not a download of the whole object.
        big = ct_image(
            sop="1.2.826.0.1.3680043.8.498.90001",
            study="1.2.826.0.1.3680043.8.498.90002",
            series="1.2.826.0.1.3680043.8.498.90003",
            patient_name="S3^BIG",
            patient_id="S3BIG",
            size=1024,
            bits_allocated=16,
            bits_stored=12,
            pixel_data=bytes(2 * 1024 * 1024),
        )
        big_path = tmp_path / "big.dcm"
        big_path.write_bytes(part10_bytes(big))
        ingest_file(archive, DEFAULT_TENANT, big_path)
        (rec,) = retrieve.find_instances(
            archive, DEFAULT_TENANT, big.StudyInstanceUID, big.SeriesInstanceUID, big.SOPInstanceUID
        )
        blobs = archive.blobs
        fetched: list[int] = []
        read_range = blobs.read_range

        def counting(k: str, offset: int, length: int) -> bytes:
            fetched.append(length)
            return read_range(k, offset, length)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(blobs, "read_range", counting)
            header = retrieve.header_dataset(archive, rec)
        assert header.SOPInstanceUID == big.SOPInstanceUID
        assert "PixelData" not in header
        assert sum(fetched) <= 512 * 1024 < rec.size
        rels.append("big")
        report = fsck_service.fsck(archive)
        assert report.ok, report.problems
        assert report.checked["hashed"] == len(rels)
        assert report.checked["blobs"] == len(rels)
    finally:
        archive.close()


def test_fsck_on_s3_finds_damage(seaweed_s3: SeaweedInfo, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        run_workers=False,
        **s3_settings_overrides(seaweed_s3, f"fsck-{secrets.token_hex(4)}"),
    )
    archive = Archive.open(settings)
    try:
        for rel in (CT_SMALL, NATIVE_MULTI, BIG_ENDIAN_MULTI):
            ingest_file(archive, DEFAULT_TENANT, SAMPLES / rel)
        records = {
            rel: retrieve.find_instances(
                archive, DEFAULT_TENANT, str(ds.StudyInstanceUID), None, str(ds.SOPInstanceUID)
            )[0]
            for rel, ds in (
                (rel, pydicom.dcmread(SAMPLES / rel, stop_before_pixels=True))
                for rel in (CT_SMALL, NATIVE_MULTI, BIG_ENDIAN_MULTI)
            )
        }
        store = archive.blobs
        flipped = bytearray(read_blob(store, records[CT_SMALL].blob_key))
        flipped[-1] ^= 0xFF
        overwrite_blob(store, records[CT_SMALL].blob_key, bytes(flipped))
        remove_blob(store, records[NATIVE_MULTI].blob_key)
        orphan = new_key()
        overwrite_blob(store, orphan, b"left over")
        report = fsck_service.fsck(archive, repair=True)
        kinds = {p["kind"]: p for p in report.problems}
        assert set(kinds) == {"checksum_mismatch", "missing_blob", "orphan_blob"}
        assert kinds["checksum_mismatch"]["blob_key"] == records[CT_SMALL].blob_key
        assert kinds["missing_blob"]["blob_key"] == records[NATIVE_MULTI].blob_key
        assert kinds["orphan_blob"]["blob_key"] == orphan
        assert not blob_exists(store, orphan)
        assert blob_keys(store) == {records[CT_SMALL].blob_key, records[BIG_ENDIAN_MULTI].blob_key}
    finally:
        archive.close()
