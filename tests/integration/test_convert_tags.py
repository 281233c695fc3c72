"""``dicomhub convert`` and ``dicomhub tags`` (the CLI for sites that cannot display DICOM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, UltrasoundMultiFrameImageStorage, generate_uid

from dicomhub.services.archive import DEFAULT_TENANT, Archive
from tests.helpers import ingest_file, part10_bytes, run_cli, set_file_meta
from tests.samples import CT_SMALL, SAMPLES, STUDY_133

pytestmark = pytest.mark.sqlite_only

FRAMES = 76


def multiframe(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 76-frame RLE-compressed ultrasound-like instance; frame i differs from every other."""
    rows, cols = 48, 64
    pixels = np.zeros((FRAMES, rows, cols), dtype=np.uint8)
    for i in range(FRAMES):
        pixels[i] = (
            np.arange(cols, dtype=np.int64)[None, :] * 3 + i * 7 + np.arange(rows)[:, None]
        ) % 256
        pixels[i, i % rows, :] = 255  # a moving line
    ds = Dataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.PatientName = "Test^Cine"
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = FRAMES
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    set_file_meta(ds)
    ds.compress(RLELossless, generate_instance_uid=False)
    path = tmp_path / "cine.dcm"
    path.write_bytes(part10_bytes(ds))
    return path, pixels


def test_convert_76_frames_writes_76_correct_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, pixels = multiframe(tmp_path)
    out = tmp_path / "png"
    # window 128,256 (LINEAR, C.11.2.1.2.1) maps 8-bit values onto themselves.
    code, text = run_cli(
        capsys, "convert", str(path), "--to", "png", "--out", str(out), "--window", "128,256"
    )
    assert code == 0, text
    files = sorted(out.glob("cine-f*.png"))
    assert len(files) == FRAMES
    for i, f in enumerate(files):
        assert f.name == f"cine-f{i + 1:04d}.png"
        assert np.array_equal(np.asarray(Image.open(f)), pixels[i]), f.name
    assert f"wrote {FRAMES} image(s)" in text


def test_convert_frames_size_gif_and_jpeg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = multiframe(tmp_path)
    code, _ = run_cli(
        capsys,
        "convert",
        str(path),
        "--to",
        "jpeg",
        "--out",
        str(tmp_path / "j"),
        "--frames",
        "1,5-9",
        "--size",
        "32x32",
        "--preset",
        "brain",
    )
    assert code == 0
    files = sorted((tmp_path / "j").glob("*.jpg"))
    assert [f.name for f in files] == [f"cine-f{n:04d}.jpg" for n in (1, 5, 6, 7, 8, 9)]
    assert Image.open(files[0]).size == (32, 24)
    code, _ = run_cli(capsys, "convert", str(path), "--to", "gif", "--out", str(tmp_path / "g"))
    assert code == 0
    gif = Image.open(tmp_path / "g" / "cine.gif")
    assert getattr(gif, "n_frames", 1) == FRAMES


def test_convert_folder_reports_unrenderable_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ct.dcm").write_bytes((SAMPLES / CT_SMALL).read_bytes())
    (folder / "sr.dcm").write_bytes(
        (SAMPLES / "files/pydicom-wheel/test_files/test-SR.dcm").read_bytes()
    )
    (folder / "notes.txt").write_text("not dicom")
    code, text = run_cli(capsys, "convert", str(folder), "--out", str(tmp_path / "out"))
    assert code == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ct.png"]
    assert "2 input(s) skipped" in text
    assert (
        run_cli(capsys, "convert", str(folder), "--out", str(tmp_path / "x"), "--window", "1")[0]
        == 2
    )


def test_convert_stored_study(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for f in STUDY_133:
        ingest_file(archive, DEFAULT_TENANT, SAMPLES / f)
    study = pydicom.dcmread(SAMPLES / STUDY_133[0], stop_before_pixels=True).StudyInstanceUID
    data_dir = str(archive.settings.data_dir)
    out = tmp_path / "study"
    code, text = run_cli(
        capsys, "convert", f"study:{study}", "--data-dir", data_dir, "--out", str(out)
    )
    assert code == 0, text
    assert len(list(out.glob("*.png"))) == 4
    code, _ = run_cli(
        capsys, "convert", "study:1.2.3.999", "--data-dir", data_dir, "--out", str(out)
    )
    assert code == 1


def test_tags_table_nested_private_and_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(capsys, "tags", str(SAMPLES / "files/pydicom-data/eCT_Supplemental.dcm"))
    assert code == 0
    lines = text.splitlines()
    seq = next(i for i, line in enumerate(lines) if "(5200,9229)" in line)
    assert "Shared Functional Groups Sequence" in lines[seq] and "SQ" in lines[seq]
    assert lines[seq + 1].strip() == "> item 1"
    assert lines[seq + 2].startswith("    (")  # nested elements indented
    assert any(line.startswith("        (") for line in lines)  # two levels deep
    code, text = run_cli(capsys, "tags", str(SAMPLES / CT_SMALL), "--width", "20")
    assert "(0009,0010)  Private Creator" in text
    assert "(GEMS_IDEN_01)" in text
    assert "…" in text
    assert "(7FE0,0010)  Pixel Data" in text and "<32768 bytes>" in text


def test_tags_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(
        capsys, "tags", str(SAMPLES / "files/pydicom-data/eCT_Supplemental.dcm"), "--json"
    )
    assert code == 0
    doc = json.loads(text)
    assert doc["52009229"]["vr"] == "SQ"
    assert isinstance(doc["52009229"]["Value"][0], dict)
