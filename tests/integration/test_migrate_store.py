"""``dicomhub migrate-store``: an embedded install (SQLite + files) copied to PostgreSQL + S3.

The source is a real embedded archive in the test's folder (samples and synthetic instances in
two tenants, a remote AE, a change feed); the target is this test's PostgreSQL database and S3
prefix. The target must answer QIDO and WADO exactly as the source does, be fsck-clean, hold one
blob per instance, and a rerun must change nothing. An interrupted run (stopped after a few
instances, with a blob uploaded but its row not written, and one half-written blob) resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.services.archive import Archive
from dicomhub.services.migrate import migrate_store
from dicomhub.storage.index import remote_ae
from dicomhub.storage.index import tables as t
from dicomhub.storage.index.migrate import current_revision, head_revision
from dicomhub.web.app import create_app
from tests.backends.blobs import overwrite_blob, read_blob
from tests.conftest import Backend
from tests.helpers import (
    ct_image,
    ingest_file,
    multipart_parts,
    part10_bytes,
    run_cli,
    run_dicomhub,
)
from tests.samples import CT_SMALL, SAMPLES, STUDY_133

pytestmark = [pytest.mark.pg_only, pytest.mark.filterwarnings("ignore")]

OTHER_TENANT = 2
DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


@dataclass
class Source:
    """The embedded archive to migrate."""

    settings: Settings
    n_instances: int

    @property
    def args(self) -> list[str]:
        return ["--from-index", self.settings.index_url, "--from-blobs", self.settings.blobs_url]


def _synthetic(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = ct_image(
            sop=generate_uid(),
            study=study,
            series=series,
            patient_name="Migrate^Other",
            patient_id="MIG-2",
            size=8,
            bits_allocated=8,
            bits_stored=8,
            pixel_data=bytes([i]) * 64,
        )
        path = folder / f"{i}.dcm"
        path.write_bytes(part10_bytes(ds))
        out.append(path)
    return out


@pytest.fixture
def source(tmp_path: Path) -> Source:
    """An embedded archive: 5 samples in the default tenant, 4 instances in a second one."""
    data = tmp_path / "embedded"
    settings = Settings(
        data_dir=data,
        index=f"sqlite:///{data / 'index.db'}",
        blobs=f"file://{data / 'blobs'}",
        run_workers=False,
    )
    archive = Archive.open(settings)
    try:
        for name in [*STUDY_133, CT_SMALL]:
            ingest_file(archive, 1, SAMPLES / name)
        with archive.db.write() as conn:
            conn.execute(
                insert(t.tenant).values(id=OTHER_TENANT, name="hospital-b", created_at=1.0)
            )
            remote_ae.insert_ae(
                conn,
                {
                    "tenant_id": OTHER_TENANT,
                    "ae_title": "MODALITY_B",
                    "host": "10.0.0.7",
                    "port": 104,
                    "may_store": True,
                    "may_query": False,
                    "may_retrieve": False,
                    "is_move_destination": False,
                },
            )
        for path in _synthetic(tmp_path / "other", 4):
            ingest_file(archive, OTHER_TENANT, path)
    finally:
        archive.close()
    return Source(settings, len(STUDY_133) + 1 + 4)


def target_args(settings: Settings) -> list[str]:
    return ["--to-index", settings.index_url, "--to-blobs", settings.blobs_url]


@pytest.fixture
def target(settings: Settings, storage: Backend) -> Settings:
    if storage.s3 is None:  # DICOMHUB_TEST_BACKENDS without pg+s3
        pytest.skip("needs the pg+s3 backend set (PostgreSQL and S3)")
    return settings


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (the source must stay byte-identical).

    A read-only SQLite reader of a WAL database creates the shared-memory file and an empty
    write-ahead log if they are missing; the log must stay empty (nothing written).
    """
    wal = folder / "index.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.parent.name != "tmp" and not p.name.endswith(("-shm", "-wal"))
    }


@pytest.fixture
def opened() -> Iterator[list[Archive]]:
    arches: list[Archive] = []
    yield arches
    for a in arches:
        a.close()


def dicomweb(settings: Settings, arches: list[Archive]) -> TestClient:
    archive = Archive.open(settings, migrate=False)
    arches.append(archive)
    return TestClient(create_app(settings, archive), raise_server_exceptions=False)


def answers(client: TestClient) -> dict[str, Any]:
    """Every QIDO level (all fields) and every instance's bytes and metadata, by URL."""
    out: dict[str, Any] = {}
    studies = client.get("/dicomweb/studies?includefield=all")
    assert studies.status_code == 200
    out["studies"] = studies.json()
    for st in studies.json():
        uid = st["0020000D"]["Value"][0]
        series = client.get(f"/dicomweb/studies/{uid}/series?includefield=all")
        instances = client.get(f"/dicomweb/studies/{uid}/instances?includefield=all")
        meta = client.get(f"/dicomweb/studies/{uid}/metadata")
        wado = client.get(f"/dicomweb/studies/{uid}", headers=DICOM)
        assert {series.status_code, instances.status_code, meta.status_code} == {200}
        assert wado.status_code == 200
        out[uid] = {
            "series": series.json(),
            "instances": instances.json(),
            "metadata": meta.json(),
            "bytes": sorted(hashlib.sha256(body).hexdigest() for _, body in multipart_parts(wado)),
        }
    return out


def index_rows(archive: Archive) -> dict[str, Any]:
    """Tenants, remote AEs and the second tenant's instances, straight from the index."""
    with archive.db.read() as conn:
        return {
            "tenants": sorted(conn.execute(select(t.tenant.c.id, t.tenant.c.name)).all()),
            "aes": sorted(
                conn.execute(
                    select(t.remote_ae.c.tenant_id, t.remote_ae.c.ae_title, t.remote_ae.c.host)
                ).all()
            ),
            "other": sorted(
                conn.execute(
                    select(t.instance.c.sop_uid, t.instance.c.sha256).where(
                        t.instance.c.tenant_id == OTHER_TENANT
                    )
                ).all()
            ),
            "changes": conn.execute(select(t.change).order_by(t.change.c.seq)).all(),
        }


def fsck_args(settings: Settings) -> list[str]:
    return ["--index", settings.index_url, "--blobs", settings.blobs_url]


def fsck_ok(capsys: pytest.CaptureFixture[str], settings: Settings) -> dict[str, Any]:
    code, out = run_cli(capsys, "fsck", *fsck_args(settings), "--json", "--pending-age", "0")
    report: dict[str, Any] = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == [], report
    return report


def test_migrate_embedded_to_pg_s3(
    source: Source,
    target: Settings,
    opened: list[Archive],
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = snapshot(source.settings.data_dir)
    args = ["migrate-store", *source.args, *target_args(target), "--verify", "--json"]
    code, out = run_cli(capsys, *args)
    report = json.loads(out)
    assert code == 0, report
    assert report["ok"] and report["counts_match"] and report["verify"]["ok"]
    assert report["instances"] == {
        "total": source.n_instances,
        "copied": source.n_instances,
        "already_present": 0,
        "blobs_reused": 0,
        "blobs_replaced": 0,
        "damaged_source": 0,
    }
    assert report["counts"]["instance"] == {
        "source": source.n_instances,
        "target": source.n_instances,
    }
    assert snapshot(source.settings.data_dir) == before, "the source was modified"

    src = dicomweb(source.settings, opened)
    dst = dicomweb(target, opened)
    expected = answers(src)
    assert len(expected["studies"]) == 2
    assert answers(dst) == expected
    assert index_rows(opened[1]) == index_rows(opened[0])
    report_fsck = fsck_ok(capsys, target)
    assert report_fsck["checked"]["instances"] == source.n_instances
    assert len(list(opened[1].blobs.keys())) == source.n_instances

    # New rows on the target get fresh keys past the copied ones (PostgreSQL sequences moved).
    extra = _synthetic(source.settings.data_dir.parent / "extra", 1)[0]
    assert ingest_file(opened[1], 1, extra).outcome == "stored"
    with opened[1].db.read() as conn:
        assert conn.execute(select(t.instance.c.pk)).scalars().all() != []


@pytest.fixture
def empty_target(target: Settings, storage: Backend) -> Iterator[Settings]:
    """The test's S3 prefix and a new PostgreSQL database without any schema."""
    assert storage.cluster is not None
    url = storage.cluster.create_database(empty=True)
    yield target.model_copy(update={"index": url})
    storage.cluster.drop_database(url)


def test_rerun_is_a_noop(
    source: Source, empty_target: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    target = empty_target
    args = ["migrate-store", *source.args, *target_args(target), "--json", "--quiet"]
    assert run_cli(capsys, *args)[0] == 0  # the Alembic chain creates the schema first
    archive = Archive.open(target, migrate=False)
    try:
        assert current_revision(archive.db) == head_revision()
    finally:
        archive.close()
    code, out = run_cli(capsys, *args)
    again = json.loads(out)
    assert code == 0 and again["ok"]
    assert again["instances"]["copied"] == 0 and again["bytes_copied"] == 0
    assert again["instances"]["already_present"] == source.n_instances
    fsck_ok(capsys, target)


def test_interrupted_migration_resumes(
    source: Source,
    target: Settings,
    opened: list[Archive],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Run 1 stops after 3 instances (as a killed run would, between batches).
    first = migrate_store(source.settings, target, batch=2, limit=3)
    assert first.stopped_early and not first.ok
    assert first.instances_copied == 3
    dst = Archive.open(target, migrate=False)
    opened.append(dst)
    src = Archive.open(source.settings, migrate=False)
    opened.append(src)
    with dst.db.read() as conn:
        copied = conn.execute(select(t.instance.c.blob_key)).scalars().all()
    assert len(copied) == 3
    assert sorted(dst.blobs.keys()) == sorted(copied)  # no row without its blob

    # A run killed later still: the next instance's blob uploaded but its row never written,
    # and the one after that only half uploaded.
    with src.db.read() as conn:
        rest = conn.execute(
            select(t.instance.c.blob_key).order_by(t.instance.c.pk).offset(3).limit(2)
        ).scalars()
        uploaded, torn = list(rest)
    overwrite_blob(dst.blobs, uploaded, read_blob(src.blobs, uploaded))
    overwrite_blob(dst.blobs, torn, read_blob(src.blobs, torn)[:100])

    started = time.monotonic()
    res = run_dicomhub("migrate-store", *source.args, *target_args(target), "--json", "--verify")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["ok"] and report["verify"]["ok"]
    assert report["instances"]["copied"] == source.n_instances - 3
    assert report["instances"]["already_present"] == 3
    assert report["instances"]["blobs_reused"] == 1
    assert report["instances"]["blobs_replaced"] == 1
    # Progress went to stderr, counts only (no UIDs, no patient names).
    assert "instances" in res.stderr and "Migrate^" not in res.stderr + res.stdout
    assert "1.2." not in res.stderr + res.stdout
    assert time.monotonic() - started < 60

    fsck_ok(capsys, target)
    assert len(list(dst.blobs.keys())) == source.n_instances
    with dst.db.read() as conn:
        dst_rows = sorted(conn.execute(select(t.instance.c.blob_key, t.instance.c.sha256)).all())
    with src.db.read() as conn:
        src_rows = sorted(conn.execute(select(t.instance.c.blob_key, t.instance.c.sha256)).all())
    assert dst_rows == src_rows
    for key, sha in dst_rows:
        assert hashlib.sha256(read_blob(dst.blobs, key)).hexdigest() == sha


def test_refuses_a_target_holding_another_archive(
    source: Source, target: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = Archive.open(target)
    try:
        with archive.db.write() as conn:
            conn.execute(insert(t.tenant).values(id=7, name="someone-else", created_at=1.0))
    finally:
        archive.close()
    capsys.readouterr()
    code = run_cli(capsys, "migrate-store", *source.args, *target_args(target))[0]
    assert code == 2
    archive = Archive.open(target)
    try:
        with archive.db.read() as conn:
            assert conn.execute(select(t.instance.c.pk)).all() == []
    finally:
        archive.close()


def test_damaged_source_blob_is_not_copied(
    source: Source,
    target: Settings,
    opened: list[Archive],
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = Archive.open(source.settings, migrate=False)
    opened.append(src)
    with src.db.read() as conn:
        damaged = conn.execute(select(t.instance.c.blob_key).order_by(t.instance.c.pk)).scalars()
        key = list(damaged)[1]
    path = src.blobs.local_path(key)
    assert path is not None
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit changed, same size
    code, out = run_cli(
        capsys, "migrate-store", *source.args, *target_args(target), "--json", "--quiet"
    )
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert report["instances"]["damaged_source"] == 1
    assert report["instances"]["copied"] == source.n_instances - 1
    assert report["counts"]["instance"] == {
        "source": source.n_instances,
        "target": source.n_instances - 1,
    }
    dst = Archive.open(target, migrate=False)
    opened.append(dst)
    with dst.db.read() as conn:
        keys = set(conn.execute(select(t.instance.c.blob_key)).scalars())
    assert key not in keys and dst.blobs.size(key) is None  # neither row nor blob
    # Every copied row has its blob; only the counters (copied from the source) count the
    # instance that is missing.
    code, out = run_cli(capsys, "fsck", *fsck_args(target), "--json")
    assert {p["kind"] for p in json.loads(out)["problems"]} == {"counter_mismatch"}

    # Once the source is repaired, a rerun completes the copy.
    path.write_bytes(good)
    code, out = run_cli(
        capsys, "migrate-store", *source.args, *target_args(target), "--json", "--quiet"
    )
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["instances"]["copied"] == 1
    fsck_ok(capsys, target)
