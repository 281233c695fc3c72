"""``dicomhub db upgrade``, ``dicomhub check`` and ``dicomhub worker`` on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomhub.config import Settings
from dicomhub.services.archive import Archive
from dicomhub.services.delete import delete
from dicomhub.storage.index.engine import IndexDatabase
from dicomhub.storage.index.migrate import current_revision, head_revision
from dicomhub.storage.index.store import instances
from tests.conftest import Backend
from tests.helpers import ingest_file, run_cli
from tests.samples import CT_SMALL, SAMPLES


def empty_index(storage: Backend, tmp_path: Path) -> str:
    if storage.cluster is None:
        return f"sqlite:///{tmp_path / 'fresh' / 'index.db'}"
    url = storage.cluster.create_database(empty=True)
    storage._extra[tmp_path / "empty"] = url  # dropped with the test's other databases
    return url


def test_db_upgrade_migrates_an_empty_index(
    storage: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_index(storage, tmp_path)
    code, out = run_cli(capsys, "db", "upgrade", "--data-dir", str(tmp_path), "--index", url)
    assert code == 0, out
    assert f"empty -> {head_revision()}" in out
    code, out = run_cli(capsys, "db", "upgrade", "--data-dir", str(tmp_path), "--index", url)
    assert code == 0 and f"{head_revision()} -> {head_revision()}" in out
    db = IndexDatabase(url)
    assert current_revision(db) == head_revision()
    db.dispose()


def test_check_reports_reachable_and_current(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Archive.open(settings).close()
    code, out = run_cli(capsys, "check", "--data-dir", str(settings.data_dir), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and report["index"]["current"] and report["blobs"]["reachable"]
    assert report["index"]["dialect"] == ("sqlite" if settings.index is None else "postgresql")


def test_check_fails_on_an_unmigrated_index(
    storage: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_index(storage, tmp_path)
    code, out = run_cli(capsys, "check", "--data-dir", str(tmp_path), "--index", url)
    assert code == 1
    assert "dicomhub db upgrade" in out


def test_check_redacts_credentials_of_an_unreachable_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://dicomhub:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    code, out = run_cli(capsys, "check", "--data-dir", str(tmp_path), "--index", url)
    assert code == 1
    assert "s3cret-pw" not in out
    assert "dicomhub:***@127.0.0.1:1/nowhere" in out
    assert "UNREACHABLE" in out


def test_worker_once_runs_due_jobs(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    archive = Archive.open(settings)
    try:
        ingest_file(archive, 1, SAMPLES / CT_SMALL)
        with archive.db.read() as conn:
            (record,) = [
                r
                for r in instances(conn, 1, _study_uid(archive))
                if archive.blobs.size(r.blob_key) is not None
            ]
        delete(archive, 1, record.study_uid)
        assert archive.blobs.size(record.blob_key) is not None  # removal is a job
    finally:
        archive.close()
    code, _ = run_cli(capsys, "worker", "--once", "--data-dir", str(settings.data_dir))
    assert code == 0
    archive = Archive.open(settings)
    try:
        assert archive.blobs.size(record.blob_key) is None
    finally:
        archive.close()


def _study_uid(archive: Archive) -> str:
    with archive.db.read() as conn:
        uid: str = conn.exec_driver_sql("SELECT study_uid FROM study").scalar_one()
    return uid
