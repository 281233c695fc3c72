"""STOW-RS, Store Instances (PS3.18 §10.5), through the in-process client.

Covers the Store Instances Response Module (PS3.18 §10.5.3), the 200/202/409 status rules,
duplicates and the duplicate policy, preamble zeroing, opaque blob keys, and hostile requests:
every one must get the right 4xx with a JSON reason, never a 500, and leave nothing partial
behind (no half-written instance, blob, pending reservation or spool file).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.jobs.worker import drain
from dicomhub.services.archive import Archive
from dicomhub.storage.blobs.keys import is_key
from dicomhub.web.app import create_app
from tests.conftest import Backend
from tests.helpers import (
    ROOT,
    Part,
    StoredBlob,
    dicom_multipart_type,
    instance_url,
    multipart_body,
    multipart_parts,
    part10_bytes,
    stored_blobs,
    zeroed,
)
from tests.samples import CT_SMALL, MANIFEST, SAMPLES, STUDY_133

pytestmark = pytest.mark.filterwarnings("ignore")

BOUNDARY = "stow-test-boundary-4c1e"
DICOM_MULTIPART = dicom_multipart_type(BOUNDARY)

# Small bounds so that the limits can be hit with real sample files.
MAX_REQUEST_BYTES = 512 * 1024
MAX_INSTANCE_BYTES = 64 * 1024
MAX_PARTS = 6

# Failure Reason (0008,1197) values (PS3.18 §10.5.3, PS3.4 Annex B.2.3).
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900

BY_FILE: dict[str, dict[str, Any]] = {e["file"]: e for e in MANIFEST}

MR_SMALL = "files/pydicom-wheel/test_files/MR_small.dcm"
REPORT = "files/pydicom-wheel/test_files/reportsi.dcm"
BIG_PART = "files/pydicom-data/emri_small.dcm"  # 84 KB > MAX_INSTANCE_BYTES
HUGE = "files/pydicom-data/US1_UNCR.dcm"  # 900 KB > MAX_REQUEST_BYTES
DICOMDIR = "files/pydicom-wheel/test_files/dicomdirtests/DICOMDIR"
MR_TRUNCATED = "files/pydicom-wheel/test_files/MR_truncated.dcm"
NO_PREAMBLE = "files/derived/MR_small_no_preamble.dcm"
NO_META = "files/pydicom-wheel/test_files/no_meta.dcm"


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def settings(tmp_path: Path, storage: Backend) -> Settings:
    """Overrides the shared fixture: a fresh archive with small, reachable bounds."""
    return storage.settings(
        tmp_path / "data",
        run_workers=False,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_instance_bytes=MAX_INSTANCE_BYTES,
        max_parts=MAX_PARTS,
    )


@dataclass
class Env:
    """An archive with its own settings, and a client for it."""

    settings: Settings
    archive: Archive
    client: TestClient


@pytest.fixture
def make_env(tmp_path: Path, storage: Backend) -> Iterator[Callable[..., Env]]:
    """Builds archives with other settings (closed at the end of the test)."""
    stack = ExitStack()

    def make(name: str, **overrides: Any) -> Env:
        settings = storage.settings(
            tmp_path / name,
            run_workers=False,
            max_request_bytes=overrides.pop("max_request_bytes", MAX_REQUEST_BYTES),
            max_instance_bytes=overrides.pop("max_instance_bytes", MAX_INSTANCE_BYTES),
            max_parts=overrides.pop("max_parts", MAX_PARTS),
            **overrides,
        )
        archive = Archive.open(settings)
        stack.callback(archive.close)
        client = TestClient(create_app(settings, archive), raise_server_exceptions=False)
        stack.enter_context(client)
        return Env(settings, archive, client)

    with stack:
        yield make


@pytest.fixture
def overwrite(make_env: Callable[..., Env]) -> Env:
    return make_env("overwrite", duplicate_policy="overwrite")


def sample(rel: str) -> bytes:
    assert rel in BY_FILE, f"{rel} is not in the sample manifest"
    return (SAMPLES / rel).read_bytes()


def header(rel: str) -> pydicom.Dataset:
    return pydicom.dcmread(SAMPLES / rel, stop_before_pixels=True)


def stow(client: TestClient, parts: Sequence[Part], study: str | None = None) -> httpx.Response:
    path = f"{ROOT}/studies" if study is None else f"{ROOT}/studies/{study}"
    resp: httpx.Response = client.post(
        path, content=multipart_body(parts, BOUNDARY), headers={"Content-Type": DICOM_MULTIPART}
    )
    return resp


def store_body(resp: httpx.Response) -> dict[str, Any]:
    """The Store Instances Response (PS3.18 §10.5.3) as DICOM JSON."""
    assert resp.headers["content-type"].split(";")[0].strip() == "application/dicom+json"
    body: dict[str, Any] = resp.json()
    assert isinstance(body, dict)
    return body


def referenced(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "00081199" not in body:
        return []
    assert body["00081199"]["vr"] == "SQ"
    items: list[dict[str, Any]] = body["00081199"]["Value"]
    return items


def failed(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "00081198" not in body:
        return []
    assert body["00081198"]["vr"] == "SQ"
    items: list[dict[str, Any]] = body["00081198"]["Value"]
    return items


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def assert_failure_item(item: dict[str, Any]) -> int:
    """A FailedSOPSequence item has a Failure Reason and a reason text; returns the reason."""
    assert item["00081197"]["vr"] == "US"
    reason = value(item, "00081197")
    assert isinstance(reason, int)
    text = value(item, "00000902")
    assert isinstance(text, str)
    assert text.strip()
    return reason


def assert_error(resp: httpx.Response, *statuses: int) -> str:
    """A 4xx JSON error with a non-empty reason; returns the reason."""
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body["status"] == resp.status_code
    reason = body["error"]
    assert isinstance(reason, str)
    assert reason.strip()
    return reason


def scalar(archive: Archive, sql: str) -> Any:
    with archive.db.read() as conn:
        return conn.exec_driver_sql(sql).scalar_one()


def stored_sop_uids(archive: Archive) -> set[str]:
    with archive.db.read() as conn:
        return {str(r[0]) for r in conn.exec_driver_sql("SELECT sop_uid FROM instance")}


def blob_files(settings: Settings) -> list[StoredBlob]:
    return stored_blobs(settings)


def spool_files(settings: Settings) -> list[Path]:
    return sorted(settings.tmp_dir.iterdir()) if settings.tmp_dir.is_dir() else []


def assert_consistent(archive: Archive, settings: Settings) -> None:
    """Nothing partial: one blob per instance row, no reservation, no spool file left."""
    assert scalar(archive, "SELECT count(*) FROM pending_blob") == 0
    assert spool_files(settings) == []
    assert len(blob_files(settings)) == scalar(archive, "SELECT count(*) FROM instance")


def assert_nothing_stored(archive: Archive, settings: Settings) -> None:
    assert scalar(archive, "SELECT count(*) FROM instance") == 0
    assert scalar(archive, "SELECT count(*) FROM study") == 0
    assert blob_files(settings) == []
    assert_consistent(archive, settings)


def retrieve_one(client: TestClient, url: str) -> bytes:
    resp = client.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert resp.status_code == 200, resp.text[:300]
    parts = multipart_parts(resp)
    assert len(parts) == 1
    return parts[0][1]


def modified(rel: str) -> bytes:
    """The sample re-encoded with one changed attribute: same SOP Instance UID, new content."""
    ds = pydicom.dcmread(SAMPLES / rel)
    ds.ImageComments = "changed by the duplicate test"
    return part10_bytes(ds)


# ---------------------------------------------------------------------------------------------
# successful stores and the response module


def test_single_part_response_shape(client: TestClient, archive: Archive) -> None:
    raw = sample(CT_SMALL)
    ds = header(CT_SMALL)
    resp = stow(client, [raw])
    assert resp.status_code == 200, resp.text
    body = store_body(resp)
    base = f"http://testserver{ROOT}"
    study_url = f"{base}/studies/{ds.StudyInstanceUID}"
    assert body["00081190"] == {"vr": "UR", "Value": [study_url]}
    assert failed(body) == []
    (item,) = referenced(body)
    assert item["00081150"] == {"vr": "UI", "Value": [ds.SOPClassUID]}
    assert item["00081155"] == {"vr": "UI", "Value": [ds.SOPInstanceUID]}
    assert item["00081190"]["vr"] == "UR"
    url = value(item, "00081190")
    assert url == (f"{study_url}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    # Both RetrieveURLs are absolute and retrievable.
    assert retrieve_one(client, url) == zeroed(raw)
    assert retrieve_one(client, study_url) == zeroed(raw)
    assert stored_sop_uids(archive) == {ds.SOPInstanceUID}


def test_multi_part_all_stored(client: TestClient, archive: Archive, settings: Settings) -> None:
    resp = stow(client, [sample(f) for f in STUDY_133])
    assert resp.status_code == 200, resp.text
    body = store_body(resp)
    uids = {header(f).SOPInstanceUID for f in STUDY_133}
    study = header(STUDY_133[0]).StudyInstanceUID
    assert value(body, "00081190") == f"http://testserver{ROOT}/studies/{study}"
    assert failed(body) == []
    refs = referenced(body)
    assert {value(r, "00081155") for r in refs} == uids
    for r in refs:
        assert value(r, "00081190").startswith(f"http://testserver{ROOT}/studies/{study}/series/")
    assert stored_sop_uids(archive) == uids
    assert scalar(archive, "SELECT count(*) FROM series") == 2
    assert len(blob_files(settings)) == 4
    assert_consistent(archive, settings)


def test_store_into_study_rejects_instance_of_another_study(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    study = header(STUDY_133[0]).StudyInstanceUID
    ct = header(CT_SMALL)
    resp = stow(client, [sample(STUDY_133[0]), sample(CT_SMALL), sample(STUDY_133[1])], study)
    assert resp.status_code == 202, resp.text
    body = store_body(resp)
    assert value(body, "00081190") == f"http://testserver{ROOT}/studies/{study}"
    (item,) = failed(body)
    assert assert_failure_item(item) == DATASET_DOES_NOT_MATCH
    assert value(item, "00081150") == ct.SOPClassUID
    assert value(item, "00081155") == ct.SOPInstanceUID
    assert {value(r, "00081155") for r in referenced(body)} == {
        header(STUDY_133[0]).SOPInstanceUID,
        header(STUDY_133[1]).SOPInstanceUID,
    }
    assert ct.SOPInstanceUID not in stored_sop_uids(archive)
    assert client.get(f"{ROOT}/studies/{ct.StudyInstanceUID}").status_code == 404
    assert_consistent(archive, settings)


def test_none_stored_is_409(client: TestClient, archive: Archive, settings: Settings) -> None:
    study = header(STUDY_133[0]).StudyInstanceUID
    resp = stow(client, [sample(CT_SMALL)], study)
    assert resp.status_code == 409, resp.text
    body = store_body(resp)
    assert referenced(body) == []
    (item,) = failed(body)
    assert assert_failure_item(item) == DATASET_DOES_NOT_MATCH

    resp = stow(client, [random.Random(9).randbytes(3000), (sample(MR_SMALL), "text/plain")])
    assert resp.status_code == 409, resp.text
    body = store_body(resp)
    assert referenced(body) == []
    assert len(failed(body)) == 2
    for item in failed(body):
        assert_failure_item(item)
    assert_nothing_stored(archive, settings)


# ---------------------------------------------------------------------------------------------
# duplicates


def test_same_bytes_twice_is_idempotent(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    raw = sample(CT_SMALL)
    uid = header(CT_SMALL).SOPInstanceUID
    for _ in range(2):
        resp = stow(client, [raw])
        assert resp.status_code == 200, resp.text
        body = store_body(resp)
        assert failed(body) == []
        assert [value(r, "00081155") for r in referenced(body)] == [uid]
    assert scalar(archive, "SELECT count(*) FROM instance") == 1
    assert scalar(archive, "SELECT num_instances FROM study") == 1
    (blob,) = blob_files(settings)
    assert blob.read_bytes() == zeroed(raw)
    assert_consistent(archive, settings)


def test_same_uid_different_content_is_rejected(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    raw = sample(CT_SMALL)
    ds = header(CT_SMALL)
    changed = modified(CT_SMALL)
    assert changed != raw
    assert stow(client, [raw]).status_code == 200

    resp = stow(client, [changed])
    assert resp.status_code == 409, resp.text
    body = store_body(resp)
    assert referenced(body) == []
    (item,) = failed(body)
    assert assert_failure_item(item) == DUPLICATE_SOP_INSTANCE
    assert value(item, "00081155") == ds.SOPInstanceUID
    assert value(item, "00081150") == ds.SOPClassUID

    # A request mixing the conflicting copy with a new instance stores the new one only.
    resp = stow(client, [changed, sample(MR_SMALL)])
    assert resp.status_code == 202, resp.text
    (item,) = failed(store_body(resp))
    assert assert_failure_item(item) == DUPLICATE_SOP_INSTANCE

    # The original is kept, byte for byte.
    assert retrieve_one(client, instance_url(ds)) == zeroed(raw)
    assert zeroed(raw) in {p.read_bytes() for p in blob_files(settings)}
    assert scalar(archive, "SELECT count(*) FROM instance") == 2
    assert scalar(archive, "SELECT count(*) FROM job") == 0
    assert_consistent(archive, settings)


def test_duplicates_within_one_request(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    raw = sample(CT_SMALL)
    uid = header(CT_SMALL).SOPInstanceUID
    resp = stow(client, [raw, raw])
    assert resp.status_code == 200, resp.text
    assert [value(r, "00081155") for r in referenced(store_body(resp))] == [uid, uid]
    assert scalar(archive, "SELECT count(*) FROM instance") == 1

    resp = stow(client, [sample(MR_SMALL), modified(MR_SMALL)])
    assert resp.status_code == 202, resp.text
    body = store_body(resp)
    assert [value(r, "00081155") for r in referenced(body)] == [header(MR_SMALL).SOPInstanceUID]
    (item,) = failed(body)
    assert assert_failure_item(item) == DUPLICATE_SOP_INSTANCE
    assert zeroed(sample(MR_SMALL)) in {p.read_bytes() for p in blob_files(settings)}
    assert scalar(archive, "SELECT count(*) FROM instance") == 2
    assert_consistent(archive, settings)


def test_overwrite_policy_replaces_content_and_removes_old_blob(overwrite: Env) -> None:
    client, archive, settings = overwrite.client, overwrite.archive, overwrite.settings
    raw = sample(CT_SMALL)
    ds = header(CT_SMALL)
    changed = modified(CT_SMALL)
    assert stow(client, [raw]).status_code == 200
    (old_blob,) = blob_files(settings)

    resp = stow(client, [changed])
    assert resp.status_code == 200, resp.text
    body = store_body(resp)
    assert failed(body) == []
    assert [value(r, "00081155") for r in referenced(body)] == [ds.SOPInstanceUID]

    url = instance_url(ds)
    assert retrieve_one(client, url) == zeroed(changed)
    meta = client.get(f"{url}/metadata").json()
    assert meta[0]["00204000"]["Value"] == ["changed by the duplicate test"]
    assert scalar(archive, "SELECT count(*) FROM instance") == 1

    # The old blob goes with the background job, not before.
    assert old_blob.exists()
    assert scalar(archive, "SELECT count(*) FROM job") >= 1
    drain(archive)
    assert not old_blob.exists()
    (new_blob,) = blob_files(settings)
    assert new_blob.read_bytes() == zeroed(changed)
    assert scalar(archive, "SELECT count(*) FROM job") == 0
    assert_consistent(archive, settings)


# ---------------------------------------------------------------------------------------------
# what is written to disk


def test_preamble_is_zeroed(client: TestClient, archive: Archive, settings: Settings) -> None:
    raw = sample(CT_SMALL)
    rng = random.Random(1127)
    hostile = b"MZ" + bytes(rng.randrange(256) for _ in range(126)) + raw[128:]
    assert len(hostile) == len(raw)
    resp = stow(client, [hostile])
    assert resp.status_code == 200, resp.text
    (blob,) = blob_files(settings)
    stored = blob.read_bytes()
    assert stored[:128] == bytes(128)
    assert stored[128:] == hostile[128:]
    ds = header(CT_SMALL)
    assert retrieve_one(client, instance_url(ds)) == bytes(128) + hostile[128:]


def test_blob_names_reveal_no_identifiers(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    files = [CT_SMALL, MR_SMALL, REPORT, *STUDY_133[:2]]
    resp = stow(client, [sample(f) for f in files])
    assert resp.status_code == 200, resp.text
    secrets: set[str] = set()
    for f in files:
        ds = header(f)
        secrets |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
        pid = str(ds.get("PatientID", "") or "")
        name = str(ds.get("PatientName", "") or "")
        candidates = [pid, name, *name.replace("=", "^").split("^")]
        secrets |= {c for c in candidates if len(c) >= 4}
    assert "98890234" in secrets
    assert "Doe^Peter" in secrets
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(settings.data_dir):
        rel = os.path.relpath(dirpath, settings.data_dir)
        names += [rel, *dirnames, *filenames]
    leaks = [(n, s) for n in names for s in secrets if s.lower() in n.lower()]
    assert leaks == []
    blobs = blob_files(settings)
    assert len(blobs) == len(files)
    for b in blobs:
        assert is_key(b.key)


# ---------------------------------------------------------------------------------------------
# hostile requests: whole-request errors


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("application/json", 415),
        (f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}', 415),
        ('multipart/related; type="application/dicom"', 400),
        (f"multipart/related; boundary={BOUNDARY}; boundary=other", 400),
    ],
    ids=["missing", "json", "dicom+json", "no-boundary", "two-boundaries"],
)
def test_bad_request_content_type(
    client: TestClient,
    archive: Archive,
    settings: Settings,
    content_type: str | None,
    status: int,
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = client.post(
        f"{ROOT}/studies", content=multipart_body([sample(CT_SMALL)], BOUNDARY), headers=headers
    )
    if content_type is None:
        assert "content-type" not in resp.request.headers
    assert_error(resp, status)
    assert_nothing_stored(archive, settings)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes(random.Random(7).randrange(256) for _ in range(5000)),
        f"--{BOUNDARY}--\r\n".encode(),
        b"no boundary anywhere in this body\r\n" * 20,
    ],
    ids=["empty", "garbage", "only-close-delimiter", "text-without-boundary"],
)
def test_malformed_body(
    client: TestClient, archive: Archive, settings: Settings, body: bytes
) -> None:
    resp = client.post(f"{ROOT}/studies", content=body, headers={"Content-Type": DICOM_MULTIPART})
    assert_error(resp, 400)
    assert_nothing_stored(archive, settings)


@pytest.mark.parametrize("cut", ["in-data", "before-close-delimiter"])
def test_truncated_multipart_stores_no_truncated_part(
    client: TestClient, archive: Archive, settings: Settings, cut: str
) -> None:
    first, second = sample(STUDY_133[0]), sample(CT_SMALL)
    body = multipart_body([first, second], BOUNDARY)
    if cut == "in-data":
        body = body[: body.index(second) + len(second) // 2]
    else:
        body = body[: -len(f"--{BOUNDARY}--\r\n")]
    resp = client.post(f"{ROOT}/studies", content=body, headers={"Content-Type": DICOM_MULTIPART})
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].split(";")[0] in (
        "application/json",
        "application/dicom+json",
    )
    uids = stored_sop_uids(archive)
    assert header(CT_SMALL).SOPInstanceUID not in uids
    assert uids <= {header(STUDY_133[0]).SOPInstanceUID}
    for blob in blob_files(settings):
        assert blob.read_bytes() == zeroed(first)
    assert_consistent(archive, settings)


def test_content_length_over_limit_is_413(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    body = multipart_body([sample(HUGE)], BOUNDARY)
    assert len(body) > MAX_REQUEST_BYTES
    resp = client.post(f"{ROOT}/studies", content=body, headers={"Content-Type": DICOM_MULTIPART})
    assert int(resp.request.headers["content-length"]) == len(body)
    assert_error(resp, 413)
    assert_nothing_stored(archive, settings)


def test_streamed_body_over_limit_is_413(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    body = multipart_body([sample(HUGE)], BOUNDARY)
    assert len(body) > MAX_REQUEST_BYTES

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 32 * 1024):
            yield body[i : i + 32 * 1024]

    resp = client.post(
        f"{ROOT}/studies", content=chunks(), headers={"Content-Type": DICOM_MULTIPART}
    )
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413)
    assert_nothing_stored(archive, settings)


def test_too_many_parts(client: TestClient, archive: Archive, settings: Settings) -> None:
    files = sorted(
        f for f in BY_FILE if f.startswith("files/pydicom-wheel/test_files/dicomdirtests/98892003/")
    )
    assert len(files) > MAX_PARTS
    parts = [sample(f) for f in files[: MAX_PARTS + 1]]
    resp = client.post(
        f"{ROOT}/studies",
        content=multipart_body(parts, BOUNDARY),
        headers={"Content-Type": DICOM_MULTIPART},
    )
    reason = assert_error(resp, 400, 413)
    assert "part" in reason.lower()
    assert scalar(archive, "SELECT count(*) FROM instance") <= MAX_PARTS
    assert_consistent(archive, settings)


@pytest.mark.parametrize(
    "study",
    ["..%2Fx", "%2E%2E", "1." + "2" * 63, "1.2.abc", "1.2..3", "1.2.3."],
    ids=["dotdot-slash", "dotdot", "65-chars", "letters", "empty-component", "trailing-dot"],
)
def test_bad_study_uid_in_path_is_400(
    client: TestClient, archive: Archive, settings: Settings, study: str
) -> None:
    resp = client.post(
        f"{ROOT}/studies/{study}",
        content=multipart_body([sample(CT_SMALL)], BOUNDARY),
        headers={"Content-Type": DICOM_MULTIPART},
    )
    assert_error(resp, 400)
    assert_nothing_stored(archive, settings)


# ---------------------------------------------------------------------------------------------
# hostile requests: one bad part among good ones


def test_part_larger_than_instance_limit_fails_alone(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    big = sample(BIG_PART)
    assert MAX_INSTANCE_BYTES < len(big) < MAX_REQUEST_BYTES
    resp = stow(client, [sample(STUDY_133[0]), big, sample(STUDY_133[1])])
    assert resp.status_code == 202, resp.text
    body = store_body(resp)
    (item,) = failed(body)
    assert assert_failure_item(item) == OUT_OF_RESOURCES
    assert len(referenced(body)) == 2
    assert header(BIG_PART).SOPInstanceUID not in stored_sop_uids(archive)
    assert len(stored_sop_uids(archive)) == 2
    assert_consistent(archive, settings)


def _truncated_ct() -> bytes:
    raw = sample(CT_SMALL)
    return raw[: len(raw) * 3 // 5]


BAD_PARTS: dict[str, tuple[bytes, str | None]] = {
    "text-plain": (sample(MR_SMALL), "text/plain"),
    "image-jpeg": (sample(MR_SMALL), "image/jpeg"),
    "non-dicom": (bytes(random.Random(3).randrange(256) for _ in range(4096)), None),
    "tiny": (b"DICM", "application/dicom"),
    "empty": (b"", "application/dicom"),
    "dicomdir": (sample(DICOMDIR), "application/dicom"),
    "truncated-sample": (sample(MR_TRUNCATED), "application/dicom"),
    "truncated-cut": (_truncated_ct(), "application/dicom"),
    "no-preamble": (sample(NO_PREAMBLE), "application/dicom"),
    "no-file-meta": (sample(NO_META), "application/dicom"),
}


@pytest.mark.parametrize("kind", list(BAD_PARTS))
def test_bad_part_fails_alone(
    client: TestClient, archive: Archive, settings: Settings, kind: str
) -> None:
    good = sample(STUDY_133[0])
    resp = stow(client, [good, BAD_PARTS[kind], sample(STUDY_133[1])])
    assert resp.status_code == 202, resp.text
    body = store_body(resp)
    (item,) = failed(body)
    reason = assert_failure_item(item)
    # Processing failure or one of the "cannot understand" codes (PS3.4 Annex B.2.3).
    assert reason == 0x0110 or 0xC000 <= reason <= 0xCFFF, hex(reason)
    assert stored_sop_uids(archive) == {
        header(STUDY_133[0]).SOPInstanceUID,
        header(STUDY_133[1]).SOPInstanceUID,
    }
    assert zeroed(good) in {p.read_bytes() for p in blob_files(settings)}
    assert_consistent(archive, settings)


def test_overwrite_with_other_study_moves_the_instance(overwrite: Env) -> None:
    """Overwriting may change the Study/Series Instance UID: the instance must move with it."""
    client, archive = overwrite.client, overwrite.archive
    raw = sample(CT_SMALL)
    old = header(CT_SMALL)
    ds = pydicom.dcmread(SAMPLES / CT_SMALL)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        "1.2.826.0.1.3680043.99.1",
        "1.2.826.0.1.3680043.99.2",
    )
    moved = part10_bytes(ds)
    assert stow(client, [raw]).status_code == 200

    resp = stow(client, [moved])
    assert resp.status_code == 200, resp.text
    (ref,) = referenced(store_body(resp))
    new_url = value(ref, "00081190")
    assert "/studies/1.2.826.0.1.3680043.99.1/series/1.2.826.0.1.3680043.99.2/" in new_url
    # The RetrieveURL of the response must work, and serve the new content.
    assert retrieve_one(client, new_url) == zeroed(moved)
    # The old study is gone (it has no instance left).
    assert client.get(f"{ROOT}/studies/{old.StudyInstanceUID}").status_code == 404
    with archive.db.read() as conn:
        studies = conn.exec_driver_sql("SELECT study_uid, num_instances FROM study").all()
        series = conn.exec_driver_sql("SELECT series_uid, num_instances FROM series").all()
    assert [tuple(r) for r in studies] == [("1.2.826.0.1.3680043.99.1", 1)]
    assert [tuple(r) for r in series] == [("1.2.826.0.1.3680043.99.2", 1)]
    drain(archive)
    assert_consistent(archive, overwrite.settings)


@pytest.mark.parametrize("before", [1, 40], ids=["after-1-part", "after-40-parts"])
def test_malformed_part_content_type(make_env: Callable[..., Env], before: int) -> None:
    """A part whose Content-Type cannot be parsed fails like a text/plain part.

    Either that part fails (202, the others stored) or the request fails as a whole; but a 400
    means that no instance was stored (PS3.18 §10.5.3.1), so it must not follow stored parts.
    """
    env = make_env("roomy", max_parts=100)
    parts: list[Part] = [sample(STUDY_133[0])] * before
    parts += [(sample(CT_SMALL), "not a media type"), sample(STUDY_133[1])]
    resp = stow(env.client, parts)
    if resp.status_code == 400:
        assert_error(resp, 400)
        assert_nothing_stored(env.archive, env.settings)
        return
    assert resp.status_code == 202, resp.text[:300]
    body = store_body(resp)
    (item,) = failed(body)
    assert_failure_item(item)
    assert len(referenced(body)) == before + 1
    assert stored_sop_uids(env.archive) == {
        header(STUDY_133[0]).SOPInstanceUID,
        header(STUDY_133[1]).SOPInstanceUID,
    }
    assert_consistent(env.archive, env.settings)
