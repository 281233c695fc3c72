"""DELETE of studies, series and instances (the WADO-RS paths; not in PS3.18, offered by all).

A deleted resource vanishes at once from retrieval (and search), counts of what remains are
updated, its blobs are removed by a background job (which is durable: it survives a restart),
and resources of another tenant can neither be seen nor deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.jobs.worker import drain
from dicomhub.services.archive import Archive
from dicomhub.web.app import create_app
from tests.helpers import (
    ROOT,
    StoredBlob,
    driver_sql,
    ingest_file,
    instance_url,
    series_url,
    stored_blob,
    stored_blobs,
    stow_samples,
    study_url,
)
from tests.samples import CT_SMALL, MANIFEST, SAMPLES

pytestmark = pytest.mark.filterwarnings("ignore")

BOUNDARY = "delete-test-boundary-0b7e"
OTHER_TENANT = 2

IN_MANIFEST: set[str] = {e["file"] for e in MANIFEST}

# One study (…0.133): series …0.134 has one instance, series …0.136 has two here.
SINGLE = "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR1/4919"
PAIR = [
    "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR2/4950",
    "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR2/5011",
]
FILES = [SINGLE, *PAIR]
SAME_PATIENT_OTHER_STUDY = "files/pydicom-wheel/test_files/dicomdirtests/98892003/MR1/5641"


# ---------------------------------------------------------------------------------------------
# helpers


def read(rel: str) -> Dataset:
    assert rel in IN_MANIFEST
    return pydicom.dcmread(SAMPLES / rel, stop_before_pixels=True)


def stow(client: TestClient, *files: str) -> None:
    stow_samples(client, *files, boundary=BOUNDARY)


def delete(client: TestClient, url: str) -> httpx.Response:
    resp: httpx.Response = client.delete(url)
    return resp


def assert_error(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json")
    assert str(resp.json()["error"]).strip()


def assert_deleted_ok(resp: httpx.Response) -> None:
    assert resp.status_code == 204, resp.text[:300]
    assert resp.content == b""


def rows(archive: Archive, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with archive.db.read() as conn:
        return [tuple(r) for r in driver_sql(conn, sql, params).all()]


def blob_path(settings: Settings, key: str) -> StoredBlob:
    return stored_blob(settings, key)


def blob_keys(archive: Archive, *sop_uids: str) -> dict[str, str]:
    """SOP Instance UID -> blob key (any tenant)."""
    out = {}
    for uid in sop_uids:
        ((key,),) = rows(archive, "SELECT blob_key FROM instance WHERE sop_uid = ?", uid)
        out[uid] = str(key)
    return out


def queued_blob_keys(archive: Archive) -> set[str]:
    keys: set[str] = set()
    for kind, payload in rows(archive, "SELECT kind, payload FROM job"):
        assert kind == "delete_blobs"
        keys |= set(json.loads(payload)["keys"])
    return keys


def all_blob_files(settings: Settings) -> set[str]:
    return {b.key for b in stored_blobs(settings)}


def qido_available(client: TestClient) -> bool:
    return client.get(f"{ROOT}/studies").status_code not in (404, 405)


def qido(client: TestClient, url: str) -> list[dict[str, Any]]:
    """QIDO-RS results; an empty result may be 204 (PS3.18 §8.3.4.4.1) or 200 ``[]``."""
    resp = client.get(url, headers={"Accept": "application/dicom+json"})
    if resp.status_code == 204:
        return []
    assert resp.status_code == 200, resp.text[:300]
    results: list[dict[str, Any]] = resp.json()
    return results


def count_attr(result: dict[str, Any], tag: str) -> int:
    return int(result[tag]["Value"][0])


# ---------------------------------------------------------------------------------------------
# the three levels


def test_delete_instance(client: TestClient, archive: Archive, settings: Settings) -> None:
    stow(client, *FILES)
    gone, kept = read(PAIR[0]), read(PAIR[1])
    keys = blob_keys(archive, *(read(f).SOPInstanceUID for f in FILES))

    assert_deleted_ok(delete(client, instance_url(gone)))

    assert_error(client.get(instance_url(gone)), 404)
    assert_error(client.get(f"{instance_url(gone)}/metadata"), 404)
    assert_error(client.get(f"{instance_url(gone)}/frames/1"), 404)
    # The series and study remain, with one instance fewer.
    series = client.get(f"{series_url(kept)}/metadata")
    assert series.status_code == 200
    assert [i["00080018"]["Value"][0] for i in series.json()] == [kept.SOPInstanceUID]
    assert len(client.get(f"{study_url(kept)}/metadata").json()) == 2
    assert rows(
        archive, "SELECT num_instances FROM series WHERE series_uid = ?", kept.SeriesInstanceUID
    ) == [(1,)]
    assert rows(archive, "SELECT num_series, num_instances FROM study") == [(2, 2)]
    if qido_available(client):
        (found,) = qido(
            client, f"{study_url(kept)}/series?SeriesInstanceUID={kept.SeriesInstanceUID}"
        )
        assert count_attr(found, "00201209") == 1  # NumberOfSeriesRelatedInstances
        (study,) = qido(client, f"{ROOT}/studies?StudyInstanceUID={kept.StudyInstanceUID}")
        assert count_attr(study, "00201208") == 2  # NumberOfStudyRelatedInstances
        assert count_attr(study, "00201206") == 2  # NumberOfStudyRelatedSeries
        assert qido(client, f"{ROOT}/instances?SOPInstanceUID={gone.SOPInstanceUID}") == []

    # The blob stays until the job runs; the job is in the job table.
    gone_key = keys[gone.SOPInstanceUID]
    assert blob_path(settings, gone_key).is_file()
    assert queued_blob_keys(archive) == {gone_key}
    assert drain(archive) >= 1
    assert not blob_path(settings, gone_key).exists()
    assert all_blob_files(settings) == {v for k, v in keys.items() if k != gone.SOPInstanceUID}
    assert rows(archive, "SELECT count(*) FROM job") == [(0,)]

    assert_error(delete(client, instance_url(gone)), 404)


def test_delete_series(client: TestClient, archive: Archive, settings: Settings) -> None:
    stow(client, *FILES)
    pair = [read(f) for f in PAIR]
    single = read(SINGLE)
    keys = blob_keys(archive, *(read(f).SOPInstanceUID for f in FILES))

    assert_deleted_ok(delete(client, series_url(pair[0])))

    assert_error(client.get(series_url(pair[0])), 404)
    assert_error(client.get(f"{series_url(pair[0])}/metadata"), 404)
    for ds in pair:
        assert_error(client.get(instance_url(ds)), 404)
    study = client.get(f"{study_url(single)}/metadata")
    assert [i["00080018"]["Value"][0] for i in study.json()] == [single.SOPInstanceUID]
    assert rows(archive, "SELECT series_uid FROM series") == [(single.SeriesInstanceUID,)]
    assert rows(archive, "SELECT num_series, num_instances FROM study") == [(1, 1)]
    if qido_available(client):
        assert qido(client, f"{ROOT}/series?SeriesInstanceUID={pair[0].SeriesInstanceUID}") == []
        (found,) = qido(client, f"{ROOT}/studies?StudyInstanceUID={single.StudyInstanceUID}")
        assert count_attr(found, "00201206") == 1
        assert count_attr(found, "00201208") == 1

    pair_keys = {keys[ds.SOPInstanceUID] for ds in pair}
    assert all(blob_path(settings, k).is_file() for k in pair_keys)
    assert queued_blob_keys(archive) == pair_keys
    drain(archive)
    assert all_blob_files(settings) == {keys[single.SOPInstanceUID]}

    assert_error(delete(client, series_url(pair[0])), 404)
    assert_error(delete(client, instance_url(pair[1])), 404)


def test_delete_study(client: TestClient, archive: Archive, settings: Settings) -> None:
    stow(client, *FILES, CT_SMALL, SAME_PATIENT_OTHER_STUDY)
    datasets = [read(f) for f in FILES]
    ct, sibling = read(CT_SMALL), read(SAME_PATIENT_OTHER_STUDY)
    assert sibling.PatientID == datasets[0].PatientID
    assert sibling.StudyInstanceUID != datasets[0].StudyInstanceUID
    keys = blob_keys(archive, *(ds.SOPInstanceUID for ds in [*datasets, ct, sibling]))

    assert_deleted_ok(delete(client, study_url(datasets[0])))

    assert_error(client.get(study_url(datasets[0])), 404)
    assert_error(client.get(f"{study_url(datasets[0])}/metadata"), 404)
    for ds in datasets:
        assert_error(client.get(series_url(ds)), 404)
        assert_error(client.get(instance_url(ds)), 404)
    # The other studies are untouched, and so is the patient who still has one.
    assert client.get(instance_url(ct)).status_code == 200
    assert client.get(instance_url(sibling)).status_code == 200
    assert sorted(rows(archive, "SELECT study_uid FROM study")) == sorted(
        [(ct.StudyInstanceUID,), (sibling.StudyInstanceUID,)]
    )
    assert sorted(rows(archive, "SELECT patient_id FROM patient")) == sorted(
        [(ct.PatientID,), (sibling.PatientID,)]
    )
    if qido_available(client):
        uid = datasets[0].StudyInstanceUID
        assert qido(client, f"{ROOT}/studies?StudyInstanceUID={uid}") == []
        assert qido(client, f"{ROOT}/instances?StudyInstanceUID={uid}") == []
        assert len(qido(client, f"{ROOT}/studies")) == 2
        (found,) = qido(client, f"{ROOT}/studies?PatientID={sibling.PatientID}")
        assert found["0020000D"]["Value"] == [sibling.StudyInstanceUID]

    deleted = {keys[ds.SOPInstanceUID] for ds in datasets}
    assert all(blob_path(settings, k).is_file() for k in deleted)
    assert queued_blob_keys(archive) == deleted
    drain(archive)
    assert all_blob_files(settings) == {keys[ct.SOPInstanceUID], keys[sibling.SOPInstanceUID]}

    assert_error(delete(client, study_url(datasets[0])), 404)
    assert_error(delete(client, series_url(datasets[0])), 404)
    assert_error(delete(client, instance_url(datasets[0])), 404)


def test_delete_unknown_or_malformed(client: TestClient, archive: Archive) -> None:
    stow(client, SINGLE, PAIR[0])
    ds = read(SINGLE)
    unknown = "1.2.826.0.1.3680043.99.404"
    for url in (
        # The instance exists, but in another series of the study.
        f"{series_url(read(PAIR[0]))}/instances/{ds.SOPInstanceUID}",
        f"{ROOT}/studies/{unknown}",
        f"{study_url(ds)}/series/{unknown}",
        f"{series_url(ds)}/instances/{unknown}",
        f"{ROOT}/studies/{unknown}/series/{ds.SeriesInstanceUID}",
        f"{ROOT}/studies/{unknown}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
    ):
        assert_error(delete(client, url), 404)
    for bad in ("1.2.abc", "1." + "2" * 63, "1..2"):
        assert_error(delete(client, f"{ROOT}/studies/{bad}"), 400)
        assert_error(delete(client, f"{study_url(ds)}/series/{bad}"), 400)
        assert_error(delete(client, f"{series_url(ds)}/instances/{bad}"), 400)
    assert client.get(instance_url(ds)).status_code == 200
    assert rows(archive, "SELECT count(*) FROM job") == [(0,)]


# ---------------------------------------------------------------------------------------------
# tenants and durability


def test_resources_of_another_tenant_cannot_be_deleted(
    client: TestClient, archive: Archive, settings: Settings
) -> None:
    with archive.db.write() as conn:
        driver_sql(
            conn,
            "INSERT INTO tenant (id, name, created_at) VALUES (?, 'other hospital', 0)",
            (OTHER_TENANT,),
        )
    stored = ingest_file(archive, OTHER_TENANT, SAMPLES / CT_SMALL)
    assert stored.outcome == "stored"
    ds = read(CT_SMALL)
    (other_key,) = blob_keys(archive, ds.SOPInstanceUID).values()

    # Invisible and undeletable for the default tenant.
    for url in (instance_url(ds), series_url(ds), study_url(ds)):
        assert_error(client.get(url), 404)
        assert_error(delete(client, url), 404)
    assert rows(archive, "SELECT count(*) FROM job") == [(0,)]

    # The same UIDs stored by the default tenant: deleting them leaves the other copy alone.
    stow(client, CT_SMALL)
    (mine,) = rows(
        archive,
        "SELECT blob_key FROM instance WHERE sop_uid = ? AND tenant_id = 1",
        ds.SOPInstanceUID,
    )
    assert_deleted_ok(delete(client, study_url(ds)))
    drain(archive)
    assert not blob_path(settings, str(mine[0])).exists()
    assert blob_path(settings, other_key).is_file()
    assert rows(archive, "SELECT tenant_id, sop_uid FROM instance") == [
        (OTHER_TENANT, ds.SOPInstanceUID)
    ]
    assert rows(archive, "SELECT tenant_id, num_instances FROM study") == [(OTHER_TENANT, 1)]


@pytest.fixture
def own_archive(settings: Settings) -> Iterator[list[Archive]]:
    """Archives opened by the test (closed at the end, even when the test fails)."""
    opened: list[Archive] = []
    yield opened
    for arch in opened:
        arch.close()


def test_delete_job_survives_restart(settings: Settings, own_archive: list[Archive]) -> None:
    first = Archive.open(settings)
    own_archive.append(first)
    with TestClient(create_app(settings, first), raise_server_exceptions=False) as client:
        stow(client, *PAIR)
        ds = read(PAIR[0])
        keys = blob_keys(first, *(read(f).SOPInstanceUID for f in PAIR))
        assert_deleted_ok(delete(client, series_url(ds)))
    first.close()
    assert all(blob_path(settings, k).is_file() for k in keys.values())

    second = Archive.open(settings)
    own_archive.append(second)
    assert queued_blob_keys(second) == set(keys.values())
    assert drain(second) >= 1
    assert all_blob_files(settings) == set()
    assert rows(second, "SELECT count(*) FROM job") == [(0,)]
    assert rows(second, "SELECT count(*) FROM instance") == [(0,)]
