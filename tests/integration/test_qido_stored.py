"""QIDO-RS results spliced from stored level JSON stay right as the archive changes.

Results are built from the member texts stored on the patient, study and series rows
(``storage.index.level_json``) plus computed members (counts, Modalities in Study, Retrieve
URL), PS3.18 §10.6.3.3. These tests change an archive (instances added to an existing study and
series, an instance overwritten, a series deleted) and check every result, and that rows in the
older compact form answer exactly the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from dicomhub.config import DuplicatePolicy
from dicomhub.services import delete
from dicomhub.services.archive import Archive
from dicomhub.storage.index import tables as t
from dicomhub.web.app import create_app
from tests.conftest import Backend
from tests.integration.qido_fixtures import (
    CT,
    MR,
    SeriesSpec,
    make_dataset,
    series_uid,
    store,
    study_uid,
)

PATIENT = {"PatientName": "Doe^John", "PatientID": "P1", "PatientSex": "M"}
STUDY = {
    "StudyDate": "20200115",
    "StudyTime": "1015",
    "AccessionNumber": "ACC1",
    "StudyDescription": "CT chest",
}
CT_SERIES = SeriesSpec(1, "CT", CT, 1, (1, 2), {"SeriesDescription": "axial"})
MR_SERIES = SeriesSpec(2, "MR", MR, 2, (1,))


@pytest.fixture
def app(storage: Backend, tmp_path: Path) -> Iterator[tuple[Archive, TestClient, Path]]:
    settings = storage.settings(
        tmp_path / "data", run_workers=False, duplicate_policy=DuplicatePolicy.OVERWRITE
    )
    archive = Archive.open(settings)
    files = tmp_path / "files"
    files.mkdir()
    with TestClient(create_app(settings, archive), raise_server_exceptions=False) as client:
        yield archive, client, files
    archive.close()


def put(archive: Archive, files: Path, spec: SeriesSpec, k: int, **extra: Any) -> None:
    number = spec.instance_numbers[k - 1]
    ds = make_dataset(PATIENT, STUDY, spec, 1, k, number)
    for key, value in extra.items():
        setattr(ds, key, value)
    store(archive, 1, ds, files)


def get(client: TestClient, path: str) -> list[dict[str, Any]]:
    response = client.get("/dicomweb" + path)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag].get("Value") if tag in item else None


def test_results_follow_additions_overwrite_and_delete(
    app: tuple[Archive, TestClient, Path],
) -> None:
    archive, client, files = app
    put(archive, files, CT_SERIES, 1)
    (study,) = get(client, "/studies")
    assert value(study, "00201206") == [1]
    assert value(study, "00201208") == [1]
    assert value(study, "00080061") == ["CT"]
    assert value(study, "00100010") == [{"Alphabetic": "Doe^John"}]
    assert "00081030" not in study  # Study Description: not returned unless asked for

    # Another instance of the same series, and a new series of the same study.
    put(archive, files, CT_SERIES, 2)
    put(archive, files, MR_SERIES, 1)
    (study,) = get(client, "/studies?includefield=StudyDescription")
    assert value(study, "00201206") == [2]
    assert value(study, "00201208") == [3]
    assert value(study, "00080061") == ["CT", "MR"]
    assert value(study, "00081030") == ["CT chest"]
    series = get(client, f"/studies/{study_uid(1)}/series")
    assert [value(s, "00201209") for s in series] == [[2], [1]]
    assert [value(s, "0008103E") for s in series] == [["axial"], None]

    # Overwrite an instance with other content: nothing counted twice.
    put(archive, files, CT_SERIES, 1, ImageType=["DERIVED", "SECONDARY"])
    (study,) = get(client, "/studies")
    assert value(study, "00201206") == [2]
    assert value(study, "00201208") == [3]
    (inst,) = get(client, f"/studies/{study_uid(1)}/instances?InstanceNumber=1&Modality=CT")
    assert value(inst, "00081190") == [
        f"http://testserver/dicomweb/studies/{study_uid(1)}/series/{series_uid(1, 1)}"
        f"/instances/{inst['00080018']['Value'][0]}"
    ]

    # Delete a series: the study's counts and modalities follow.
    delete.delete(archive, 1, study_uid(1), series_uid(1, 2))
    (study,) = get(client, "/studies")
    assert value(study, "00201206") == [1]
    assert value(study, "00201208") == [2]
    assert value(study, "00080061") == ["CT"]
    assert value(study, "00100010") == [{"Alphabetic": "Doe^John"}]


QUERIES = [
    "/studies",
    "/studies?includefield=all",
    "/series?includefield=all",
    "/instances?includefield=all",
    f"/studies/{study_uid(1)}/series?includefield=PatientName",
    "/studies?PatientName=doe&fuzzymatching=true&includefield=00101010",
]


def test_rows_in_the_older_compact_form_answer_the_same(
    app: tuple[Archive, TestClient, Path],
) -> None:
    archive, client, files = app
    for spec in (CT_SERIES, MR_SERIES):
        for k in range(1, len(spec.instance_numbers) + 1):
            put(archive, files, spec, k, PatientAge="042Y")
    before = {q: client.get("/dicomweb" + q).content for q in QUERIES}
    with archive.db.write() as conn:
        for table in (t.patient, t.study, t.series):
            for pk, attrs in conn.execute(select(table.c.pk, table.c.attrs)).all():
                assert attrs.startswith("{\n")  # the stored form: one member per line
                compact = json.dumps(json.loads(attrs), separators=(",", ":"), ensure_ascii=False)
                conn.execute(update(table).where(table.c.pk == pk).values(attrs=compact))
    after = {q: client.get("/dicomweb" + q).content for q in QUERIES}
    assert after == before
    assert all(json.loads(body) for body in after.values())
