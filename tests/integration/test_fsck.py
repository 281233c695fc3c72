"""``dicomhub fsck``: clean after import, detects each kind of damage, repairs what it may."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from dicomhub.cli.main import main
from dicomhub.config import Settings
from dicomhub.services import delete
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.services.fsck import fsck
from dicomhub.services.importer import import_paths
from dicomhub.storage.blobs.keys import new_key
from dicomhub.storage.index import tables as t
from tests.helpers import StoredBlob, run_cli, run_dicomhub, stored_blob
from tests.samples import SAMPLES

MEDIA = SAMPLES / "files" / "pydicom-wheel" / "test_files" / "dicomdirtests" / "TINY_ALPHA"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory holding the 50 instances of a small DICOMDIR medium."""
    media = tmp_path / "media"
    shutil.copytree(MEDIA, media)
    data = tmp_path / "data"
    arch = Archive.open(Settings(data_dir=data))
    try:
        report = import_paths(arch, [media])
    finally:
        arch.close()
    assert report.outcomes["stored"] == 50 and report.exit_code == 0
    return data


def run_fsck(capsys: pytest.CaptureFixture[str], data: Path, *flags: str) -> tuple[int, Any]:
    code, out = run_cli(capsys, "fsck", "--data-dir", str(data), "--json", *flags)
    return code, json.loads(out)


def instances(data: Path) -> list[tuple[str, str, int]]:
    """(sop uid, blob key, study pk) of every instance, in pk order."""
    arch = Archive.open(Settings(data_dir=data))
    try:
        with arch.db.read() as conn:
            rows = conn.execute(
                select(t.instance.c.sop_uid, t.instance.c.blob_key, t.instance.c.study_pk).order_by(
                    t.instance.c.pk
                )
            ).all()
        return [(str(a), str(b), int(c)) for a, b, c in rows]
    finally:
        arch.close()


def blob_path(data: Path, key: str) -> Path:
    return data / "blobs" / key


def blob(data: Path, key: str) -> StoredBlob:
    """The blob ``key`` in whichever store the archive in ``data`` uses."""
    return stored_blob(Settings(data_dir=data), key)


#: These tests damage blobs in place (truncate, flip bits, drop files into the store folder),
#: which only the filesystem store of the embedded backend set allows.
FILES_DAMAGED = pytest.mark.sqlite_only


def by_kind(report: dict[str, Any], section: str = "problems") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in report[section]:
        out.setdefault(p["kind"], []).append(p)
    return out


def test_clean_after_import(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_fsck(capsys, data)
    assert code == 0
    assert report["ok"] is True and report["problems"] == [] and report["repaired"] == []
    checked = report["checked"]
    assert checked["instances"] == checked["blobs"] == checked["hashed"] == 50
    assert (checked["studies"], checked["pending"]) == (1, 0)


def break_everything(data: Path) -> dict[str, Any]:
    """Damage the archive in every way fsck knows; return what was done."""
    rows = instances(data)
    (sop_missing, key_missing, _), (sop_trunc, key_trunc, _) = rows[0], rows[1]
    (sop_flip, key_flip, _), (sop_uid, key_uid, study_pk) = rows[2], rows[3]
    blob_path(data, key_missing).unlink()
    path = blob_path(data, key_trunc)
    path.write_bytes(path.read_bytes()[:-100])
    path = blob_path(data, key_flip)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # last pixel byte: still parses, checksum differs
    path.write_bytes(bytes(raw))
    # Another SOP Instance UID of the same length, in the meta group and the data set alike.
    path = blob_path(data, key_uid)
    old = sop_uid.encode()
    new = old[:-1] + (b"1" if old[-1:] != b"1" else b"2")
    path.write_bytes(path.read_bytes().replace(old, new))

    orphan = new_key()
    blob_path(data, orphan).parent.mkdir(parents=True, exist_ok=True)
    blob_path(data, orphan).write_bytes(b"left over")
    stale, young = new_key(), new_key()
    blob_path(data, stale).parent.mkdir(parents=True, exist_ok=True)
    blob_path(data, stale).write_bytes(b"half written")
    arch = Archive.open(Settings(data_dir=data))
    try:
        with arch.db.write() as conn:
            now = time.time()
            conn.execute(
                insert(t.pending_blob),
                [
                    {"blob_key": stale, "tenant_id": DEFAULT_TENANT, "created_at": now - 7200},
                    {"blob_key": young, "tenant_id": DEFAULT_TENANT, "created_at": now},
                ],
            )
            conn.execute(
                update(t.study)
                .where(t.study.c.pk == study_pk)
                .values(num_instances=t.study.c.num_instances + 3)
            )
            conn.execute(update(t.series).values(num_instances=t.series.c.num_instances - 1))
    finally:
        arch.close()
    return {
        "missing": (sop_missing, key_missing),
        "truncated": (sop_trunc, key_trunc),
        "flipped": (sop_flip, key_flip),
        "uid": (sop_uid, new.decode()),
        "orphan": orphan,
        "stale": stale,
        "young": young,
    }


@FILES_DAMAGED
def test_detects_each_problem_kind(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = break_everything(data)
    code, report = run_fsck(capsys, data)
    assert code == 1 and report["ok"] is False
    kinds = by_kind(report)
    assert [p["sop_instance_uid"] for p in kinds["missing_blob"]] == [done["missing"][0]]
    assert [p["blob_key"] for p in kinds["size_mismatch"]] == [done["truncated"][1]]
    assert kinds["size_mismatch"][0]["indexed_size"] - kinds["size_mismatch"][0]["blob_size"] == 100
    assert {p["sop_instance_uid"] for p in kinds["checksum_mismatch"]} == {
        done["flipped"][0],
        done["uid"][0],
    }
    assert [p["sop_instance_uid"] for p in kinds["unparsable_blob"]] == [done["truncated"][0]]
    assert kinds["uid_mismatch"][0]["blob_sop_instance_uid"] == done["uid"][1]
    assert [p["blob_key"] for p in kinds["orphan_blob"]] == [done["orphan"]]
    assert [(p["blob_key"], p["blob_present"]) for p in kinds["stale_pending"]] == [
        (done["stale"], True)
    ]
    assert report["checked"]["pending_recent"] == 1  # in flight: not a problem
    counters = {(p["level"], p["counter"]) for p in kinds["counter_mismatch"]}
    assert counters == {("study", "num_instances"), ("series", "num_instances")}

    # --pending-age 0: every reservation is stale (only safe with no server running)
    _, report = run_fsck(capsys, data, "--pending-age", "0")
    assert {p["blob_key"] for p in by_kind(report)["stale_pending"]} == {
        done["stale"],
        done["young"],
    }

    # --quick: existence and size only
    code, report = run_fsck(capsys, data, "--quick")
    assert code == 1 and report["checked"]["hashed"] == 0
    quick = set(by_kind(report))
    assert {"missing_blob", "size_mismatch"} <= quick
    assert not quick & {"checksum_mismatch", "uid_mismatch", "unparsable_blob"}


@FILES_DAMAGED
def test_repair_fixes_what_it_may(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = break_everything(data)
    code, report = run_fsck(capsys, data, "--repair")
    assert code == 1  # damaged instances remain: data loss to investigate, never deleted
    repaired = by_kind(report, "repaired")
    assert set(repaired) == {"orphan_blob", "stale_pending", "counter_mismatch"}
    assert not blob_path(data, done["orphan"]).exists()
    assert not blob_path(data, done["stale"]).exists()
    assert len(instances(data)) == 50  # no instance row removed

    code, report = run_fsck(capsys, data)
    assert code == 1
    assert set(by_kind(report)) == {
        "missing_blob",
        "size_mismatch",
        "checksum_mismatch",
        "unparsable_blob",
        "uid_mismatch",
    }
    assert report["checked"]["pending"] == 1  # the young reservation is left alone


@FILES_DAMAGED
def test_repair_to_consistent(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orphan = new_key()
    blob_path(data, orphan).parent.mkdir(parents=True, exist_ok=True)
    blob_path(data, orphan).write_bytes(b"x")
    arch = Archive.open(Settings(data_dir=data))
    try:
        with arch.db.write() as conn:
            conn.execute(update(t.study).values(num_series=7))
            conn.execute(
                insert(t.pending_blob).values(blob_key=new_key(), tenant_id=1, created_at=0.0)
            )
    finally:
        arch.close()
    code, report = run_fsck(capsys, data, "--repair")
    assert code == 0 and report["ok"] is True
    assert len(report["problems"]) == len(report["repaired"]) == 3
    assert by_kind(report)["stale_pending"][0]["blob_present"] is False
    code, report = run_fsck(capsys, data)
    assert code == 0 and report["problems"] == []


def test_blobs_awaiting_deletion_are_not_orphans(data: Path) -> None:
    (_, key, _) = instances(data)[0]
    arch = Archive.open(Settings(data_dir=data, run_workers=False))
    try:
        with arch.db.read() as conn:
            study = conn.execute(select(t.study.c.study_uid)).scalar_one()
        assert delete.delete(arch, DEFAULT_TENANT, study) == 50
        report = fsck(arch)  # the delete_blobs job has not run yet
        assert report.ok, report.problems
        assert report.checked["awaiting_deletion"] == 50
        assert blob(data, key).exists()
    finally:
        arch.close()


def test_text_report_and_subprocess(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (_, key, _) = instances(data)[5]
    blob(data, key).store.delete(key)
    capsys.readouterr()
    assert main(["fsck", "--data-dir", str(data), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "missing_blob: tenant_id=1" in out and key in out
    assert out.rstrip().endswith("fsck: 1 problem(s) remain")
    proc = run_dicomhub("fsck", "--data-dir", str(data), "--json", "--jobs", "4")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert [p["kind"] for p in report["problems"]] == ["missing_blob"]
    with pytest.raises(SystemExit) as exc:
        main(["fsck", "--pending-age", "-1"])
    assert exc.value.code == 2
