"""``dicomhub import``: folders, DICOMDIR media, ZIP archives (zip-slip, bombs), duplicates.

All test data beyond the shared sample set is generated here, in ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicomhub.cli.import_ import ProgressBar
from dicomhub.cli.main import main
from dicomhub.config import Settings
from dicomhub.services.archive import Archive
from dicomhub.services.importer import NOT_DICOM, ImportLimits, Progress, import_paths
from dicomhub.storage.index import tables as t
from tests.helpers import ct_image, part10_bytes, run_cli, run_dicomhub
from tests.samples import SAMPLES

MEDIA = SAMPLES / "files" / "pydicom-wheel" / "test_files" / "dicomdirtests"
CT_SMALL = SAMPLES / "files" / "pydicom-wheel" / "test_files" / "CT_small.dcm"
DICOMDIR_READ = "DICOMDIR (PS3.10 §8): the files it references were imported, not itself"


def make_instance(
    study: str | None = None, series: str | None = None, *, pixels: int = 64
) -> bytes:
    """A small, valid CT Image Part-10 file with fresh UIDs."""
    ds = ct_image(
        sop=generate_uid(),
        study=study or generate_uid(),
        series=series or generate_uid(),
        patient_name="Import^Test",
        patient_id="IMP-1",
        size=8,
        bits_allocated=8,
        bits_stored=8,
        pixel_data=bytes(range(pixels)),
    )
    return part10_bytes(ds)


def run_json(capsys: pytest.CaptureFixture[str], data: Path, *paths: Path) -> tuple[int, Any]:
    code, out = run_cli(capsys, "import", "--data-dir", str(data), "--json", *map(str, paths))
    return code, json.loads(out)


def counts(data: Path) -> tuple[int, int]:
    """(instance rows, blob files) of the archive in ``data``."""
    arch = Archive.open(Settings(data_dir=data))
    try:
        with arch.db.read() as conn:
            n = int(conn.execute(select(func.count()).select_from(t.instance)).scalar_one())
        return n, len(list(arch.blobs.keys()))
    finally:
        arch.close()


def rejected_names(summary: dict[str, Any]) -> dict[str, str]:
    return {n: reason for reason, names in summary["rejected_by_reason"].items() for n in names}


def test_folder_import_of_every_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    data = tmp_path / "data"
    code, summary = run_json(capsys, data, SAMPLES / "files")
    assert code == 1  # the set holds broken files on purpose
    skipped = {n for names in summary["skipped_by_reason"].values() for n in names}
    rejected = rejected_names(summary)
    accounted = summary["stored"] + summary["duplicate"] + summary["rejected"] + len(skipped)
    assert accounted == len(manifest["files"])
    assert summary["stored"] > 150
    for entry in manifest["files"]:
        name = entry["file"]  # "files/...": names are relative to the input, never absolute
        props = entry["properties"]
        if props["is_dicomdir"]:
            assert name in skipped
        elif not props["has_preamble_DICM"]:
            assert rejected.get(name) == NOT_DICOM
        elif "derived-malformed" in entry["tricky"]:
            assert name in rejected
    assert not any(n.startswith("/") for n in [*rejected, *skipped])
    assert counts(data) == (summary["stored"], summary["stored"])
    code, out = run_cli(capsys, "fsck", "--data-dir", str(data), "--json")
    assert code == 0, out


def test_dicomdir_media_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "cd"
    shutil.copytree(MEDIA, media)
    # CD file systems upper-case names; a copy may come back lower-cased.
    tiny = media / "TINY_ALPHA"
    for path in sorted(tiny.rglob("*"), key=lambda p: -len(p.parts)):
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))
    data = tmp_path / "data"
    code, summary = run_json(capsys, data, tiny / "DICOMDIR")  # the DICOMDIR only
    assert code == 0
    assert summary["stored"] == 50
    assert summary["skipped_by_reason"] == {DICOMDIR_READ: ["TINY_ALPHA/DICOMDIR"]}

    code, summary = run_json(capsys, data, media)  # the whole copy of the medium
    referenced = 31 + 50
    assert summary["stored"] + summary["duplicate"] == referenced
    assert summary["duplicate"] == 50  # TINY_ALPHA again, each file once
    assert summary["rejected"] == 0 and code == 0
    read = summary["skipped_by_reason"][DICOMDIR_READ]
    assert sorted(read) == ["cd/DICOMDIR", "cd/TINY_ALPHA/DICOMDIR"]
    assert counts(data) == (referenced, referenced)  # the DICOMDIRs are not stored


def test_dicomdir_missing_referenced_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media = tmp_path / "cd"
    shutil.copytree(MEDIA / "TINY_ALPHA", media)
    (media / "PT000000" / "ST000000" / "SE000000" / "IM000003").unlink()
    code, summary = run_json(capsys, tmp_path / "data", media / "DICOMDIR")
    assert code == 1
    assert summary["stored"] == 49
    assert rejected_names(summary) == {
        "cd/PT000000/ST000000/SE000000/IM000003": "file referenced by the DICOMDIR is missing"
    }


def write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def test_zip_import_with_nested_and_folder_zips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = generate_uid()
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("b/one.dcm", make_instance(study))
        zf.writestr("b/two.dcm", make_instance(study))
    innermost = io.BytesIO()
    with zipfile.ZipFile(innermost, "w") as zf:
        zf.writestr("deep.dcm", make_instance(study))
    too_deep = io.BytesIO()
    with zipfile.ZipFile(too_deep, "w") as zf:
        zf.writestr("level2.zip", innermost.getvalue())
    outer = write_zip(
        tmp_path / "export.zip",
        {
            "a/x.dcm": make_instance(study),
            "a/readme.txt": b"a viewer's readme\n",
            "a/inner.zip": inner.getvalue(),
            "a/nested.zip": too_deep.getvalue(),
            "DICOMDIR": (MEDIA / "DICOMDIR").read_bytes(),
        },
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    write_zip(folder / "in-folder.zip", {"y.dcm": make_instance(study)})
    data = tmp_path / "data"
    code, summary = run_json(capsys, data, outer, folder)
    assert code == 1
    assert summary["stored"] == 4  # x, inner one + two, in-folder y
    assert rejected_names(summary) == {
        "export.zip!a/readme.txt": NOT_DICOM,
        "export.zip!a/nested.zip!level2.zip": "ZIP archive nested deeper than 1 level(s)",
    }
    assert summary["skipped"] == 1
    assert counts(data) == (4, 4)


@pytest.mark.parametrize(
    "name", ["../../escaped.dcm", "/tmp/absolute-escape.dcm", "..\\..\\win.dcm", "a/../../../b.dcm"]
)
def test_zip_slip_names_are_only_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    archive = write_zip(work / "slip.zip", {name: make_instance()})
    before = {p for p in tmp_path.rglob("*")}
    data = work / "data"
    code, summary = run_json(capsys, data, archive)
    assert code == 0 and summary["stored"] == 1
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(p == data or data in p.parents for p in created), created
    assert not Path("/tmp/absolute-escape.dcm").exists()
    assert not (tmp_path / "escaped.dcm").exists() and not (tmp_path / "b.dcm").exists()
    assert counts(data) == (1, 1)


def test_zip_bomb_member_is_rejected_early(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifty_mb = 50 * 1024 * 1024
    bomb = bytes(128) + b"DICM" + bytes(fifty_mb)  # looks like DICOM, inflates 1000:1
    path = write_zip(
        tmp_path / "bomb.zip",
        {"bomb.dcm": bomb, "zeros.bin": bytes(fifty_mb), "ok.dcm": make_instance()},
    )
    assert path.stat().st_size < 200_000
    started = time.monotonic()
    code, summary = run_json(capsys, tmp_path / "data", path)
    assert time.monotonic() - started < 20
    assert code == 1 and summary["stored"] == 1
    reasons = rejected_names(summary)
    assert "compression ratio above 200:1" in reasons["bomb.zip!bomb.dcm"]
    assert reasons["bomb.zip!zeros.bin"] == NOT_DICOM
    assert not list((tmp_path / "data" / "tmp").iterdir())  # no spool left behind


def test_zip_member_over_instance_size_limit(tmp_path: Path) -> None:
    big = make_instance(pixels=0)[:-8] + bytes(200_000)
    path = write_zip(tmp_path / "big.zip", {"big.dcm": big}, method=zipfile.ZIP_STORED)
    arch = Archive.open(Settings(data_dir=tmp_path / "data", max_instance_bytes=64 * 1024))
    try:
        report = import_paths(arch, [path])
    finally:
        arch.close()
    assert report.rejected == {"instance larger than the limit of 65536 bytes": ["big.zip!big.dcm"]}


def test_zip_limits_members_and_total_bytes(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "many.zip", {f"{i}.dcm": make_instance() for i in range(5)})
    arch = Archive.open(Settings(data_dir=tmp_path / "data"))
    try:
        report = import_paths(arch, [path], limits=ImportLimits(max_members=3))
        assert report.rejected == {"ZIP archive has more than 3 members": ["many.zip"]}
        size = len(make_instance())
        report = import_paths(arch, [path], limits=ImportLimits(max_total_bytes=size * 5 // 2))
        assert 1 <= report.outcomes["stored"] <= 3 and report.exit_code == 1
        assert report.rejected["ZIP archive byte budget exhausted"][0].startswith("many.zip!")
        too_big = [
            n for reason, names in report.rejected.items() for n in names if "larger" in reason
        ]
        assert too_big == ["many.zip"]
    finally:
        arch.close()


def test_corrupt_zips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "garbage.zip").write_bytes(b"PK\x03\x04" + os.urandom(300))
    good = write_zip(tmp_path / "good.zip", {"x.dcm": make_instance(), "y.dcm": make_instance()})
    raw = good.read_bytes()
    (folder / "truncated.zip").write_bytes(raw[: len(raw) // 2])
    damaged = bytearray(raw)
    damaged[60:90] = bytes(30)  # inside the first member's compressed data
    (folder / "damaged.zip").write_bytes(bytes(damaged))
    code, summary = run_json(capsys, tmp_path / "data", folder)
    assert code == 1
    reasons = rejected_names(summary)
    assert reasons["in/garbage.zip"] == "corrupt or unsupported ZIP archive"
    assert reasons["in/truncated.zip"] == "corrupt or unsupported ZIP archive"
    assert reasons["in/damaged.zip!x.dcm"] == "corrupt or unsupported ZIP member"
    assert summary["stored"] == 1  # damaged.zip!y.dcm


def test_reimport_is_all_duplicate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        (folder / "sub" / f"{i}.dcm").write_bytes(make_instance())
    write_zip(folder / "z.zip", {"z.dcm": make_instance()})
    data = tmp_path / "data"
    code, first = run_json(capsys, data, folder)
    assert code == 0 and first["stored"] == 7
    code, again = run_json(capsys, data, folder)
    assert code == 0
    assert (again["stored"], again["duplicate"], again["rejected"]) == (0, 7, 0)
    assert counts(data) == (7, 7)


def test_rejected_files_reported_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not dicom")
    (folder / "empty.dcm").write_bytes(b"")
    good = make_instance()
    (folder / "good.dcm").write_bytes(good)
    (folder / "truncated.dcm").write_bytes(make_instance()[:-20])
    conflicting = bytearray(good)
    conflicting[-1] ^= 0xFF  # same SOP Instance UID, other content
    (folder / "zz-conflict.dcm").write_bytes(bytes(conflicting))
    code, out = run_cli(
        capsys, "import", "--jobs", "1", "--data-dir", str(tmp_path / "data"), str(folder)
    )
    assert code == 1
    assert out.startswith("import: 1 stored, 0 duplicate, 4 rejected, 0 skipped")
    assert f"rejected (2): {NOT_DICOM}" in out
    assert "    in/notes.txt" in out and "    in/empty.dcm" in out
    assert "already stored with different content\n    in/zz-conflict.dcm" in out
    assert "in/truncated.dcm" in out
    assert str(tmp_path) not in out  # names are relative, never absolute


def test_symlinks_not_followed_out_of_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(make_instance())
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "real.dcm").write_bytes(make_instance())
    (folder / "link-inside.dcm").symlink_to(folder / "real.dcm")
    (folder / "link-out.dcm").symlink_to(outside / "secret.dcm")
    (folder / "dir-out").symlink_to(outside, target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    code, summary = run_json(capsys, tmp_path / "data", folder)
    assert code == 1
    assert summary["stored"] == 1 and summary["duplicate"] == 0  # real.dcm, once
    outside_reason = "symbolic link leads outside the import roots (not followed)"
    assert summary["rejected_by_reason"] == {outside_reason: ["in/dir-out", "in/link-out.dcm"]}


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["import", "--data-dir", str(tmp_path / "d"), str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["import", "--jobs", "0", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["import"])
    assert exc.value.code == 2


def test_parallel_jobs_and_progress(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i}.dcm").write_bytes(make_instance())
    seen: list[Progress] = []
    arch = Archive.open(Settings(data_dir=tmp_path / "data"))
    try:
        report = import_paths(arch, [folder], jobs=8, on_progress=seen.append)
    finally:
        arch.close()
    assert report.outcomes["stored"] == 40
    assert seen[-1] == Progress(done=40, total=40, stored=40, duplicate=0, rejected=0)

    tty = io.StringIO()
    bar = ProgressBar(tty, tty=True, tty_interval_s=0)
    bar.update(Progress(5, 10, 4, 0, 1))
    bar.close(Progress(10, 10, 9, 0, 1))
    assert tty.getvalue().startswith("\r[") and "10/10" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    plain = io.StringIO()
    bar = ProgressBar(plain, tty=False, line_interval_s=0)
    bar.update(Progress(5, 10, 4, 0, 1))
    bar.close(Progress(10, 10, 9, 0, 1))
    assert plain.getvalue() == "import: 5/10  stored 4  dup 0  rejected 1\n"


def test_cli_in_subprocess(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CT_SMALL, folder / "ct.dcm")
    (folder / "junk.bin").write_bytes(b"\x00" * 10)
    proc = run_dicomhub(
        "import", "--data-dir", str(tmp_path / "data"), "--jobs", "3", "--json", str(folder)
    )
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["stored"] == 1
    assert summary["rejected_by_reason"] == {NOT_DICOM: ["in/junk.bin"]}
    stored = pydicom.dcmread(folder / "ct.dcm").SOPInstanceUID
    assert stored
