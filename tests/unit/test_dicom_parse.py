"""parse_instance against every file of the shared sample set, plus hostile input."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomhub.dicom.json_model import MARKER, render_bulk_markers
from dicomhub.dicom.model import ByteRange, ParsedInstance
from dicomhub.dicom.parse import parse_instance, zero_preamble
from dicomhub.errors import InvalidDicom
from tests.samples import (
    MANIFEST,
    SAMPLES,
    is_part10,
    pydicom_full,
    rule_violation,
)

pytestmark = pytest.mark.filterwarnings("ignore")


ACCEPTED = [e for e in MANIFEST if is_part10(e)]
REJECTED = [e for e in MANIFEST if not is_part10(e)]


def _id(entry: dict[str, Any]) -> str:
    return str(entry["file"]).removeprefix("files/")


def test_manifest_is_covered() -> None:
    assert len(ACCEPTED) + len(REJECTED) == len(MANIFEST) >= 268


@pytest.mark.parametrize("entry", REJECTED, ids=_id)
def test_not_storable_files_are_rejected(entry: dict[str, Any]) -> None:
    with pytest.raises(InvalidDicom):
        parse_instance(SAMPLES / entry["file"])


def _element_at(ds: Dataset, key: str) -> DataElement | RawDataElement | None:
    """Navigate a bulk key (``SSSSSSSS/i/TTTTTTTT``) in a pydicom data set."""
    parts = key.split("/")
    current = ds
    while len(parts) > 1:
        seq_tag, index = int(parts[0], 16), int(parts[1])
        if seq_tag not in current:
            return None
        elem = current[seq_tag]
        if elem.VR != "SQ" or index >= len(elem.value):
            return None
        current = elem.value[index]
        parts = parts[2:]
    tag = int(parts[0], 16)
    if tag not in current:
        return None
    return current.get_item(tag)


def _read(path: Path, ranges: tuple[ByteRange, ...]) -> bytes:
    with path.open("rb") as f:
        chunks = []
        for r in ranges:
            f.seek(r.offset)
            chunks.append(f.read(r.length))
    return b"".join(chunks)


def _bulk_keys(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        uri = node.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith(MARKER):
            out.append(uri.removeprefix(MARKER))
        for value in node.values():
            out.extend(_bulk_keys(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(_bulk_keys(value))
    return out


def _norm(attr: dict[str, Any]) -> dict[str, Any]:
    """Normalise pydicom/our JSON for comparison (empty PN groups, '' vs null)."""
    values = attr.get("Value")
    if not values:
        return {"vr": attr["vr"]}
    norm = []
    for v in values:
        if isinstance(v, dict):
            v = {k: c for k, c in v.items() if c}
        norm.append(None if v == "" else v)
    return {"vr": attr["vr"], "Value": norm}


SIMPLE_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "SOPInstanceUID",
    "StudyInstanceUID",
)


def _check_frames(path: Path, parsed: ParsedInstance, ds: Dataset) -> None:
    if not parsed.frames:
        return
    if parsed.encapsulated:
        try:
            expected = list(generate_frames(ds.PixelData, number_of_frames=len(parsed.frames)))
        except Exception:
            return  # pydicom cannot split these frames either
        assert len(expected) == len(parsed.frames)
        for i, ranges in enumerate(parsed.frames):
            assert _read(path, ranges) == expected[i], f"frame {i + 1}"
        return
    pixel_keyword = next(
        k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds
    )
    pixels: bytes = ds[pixel_keyword].value
    for i, ranges in enumerate(parsed.frames):
        assert len(ranges) == 1
        start = ranges[0].offset - parsed.frames[0][0].offset
        assert _read(path, ranges) == pixels[start : start + ranges[0].length], f"frame {i + 1}"
        assert start == i * ranges[0].length


@pytest.mark.parametrize("entry", ACCEPTED, ids=_id)
def test_part10_sample(entry: dict[str, Any]) -> None:
    path = SAMPLES / entry["file"]
    violation = rule_violation(entry)
    if violation is not None:
        with pytest.raises(InvalidDicom):
            parse_instance(path)
        return

    parsed = parse_instance(path)
    ds = pydicom_full(str(path))

    assert parsed.transfer_syntax_uid == str(ds.file_meta.TransferSyntaxUID)
    assert parsed.sop_class_uid == str(ds.SOPClassUID)
    assert parsed.sop_instance_uid == str(ds.SOPInstanceUID)
    assert parsed.study_instance_uid == str(ds.StudyInstanceUID)
    assert parsed.series_instance_uid == str(ds.SeriesInstanceUID)

    assert set(parsed.patient) == {
        "patient_id",
        "issuer_of_patient_id",
        "patient_name",
        "patient_birth_date",
        "patient_sex",
    }
    assert set(parsed.study) == {
        "study_date",
        "study_time",
        "accession_number",
        "study_id",
        "referring_physician_name",
        "study_description",
    }
    assert set(parsed.series) == {
        "modality",
        "series_number",
        "series_description",
        "performed_procedure_step_start_date",
        "performed_procedure_step_start_time",
    }
    assert set(parsed.instance) == {
        "instance_number",
        "rows",
        "columns",
        "bits_allocated",
        "number_of_frames",
        "specific_character_set",
    }
    if "Rows" in ds and isinstance(ds.Rows, int):
        assert parsed.instance["rows"] == ds.Rows
    if parsed.patient["patient_name"] is not None:
        assert parsed.patient["patient_name"] == ds.PatientName.alphabetic or "=" in str(
            ds.PatientName
        )
    if parsed.study["study_date"] is not None:
        assert parsed.study["study_date"] == str(ds.StudyDate).strip()

    # Metadata: JSON-serialisable, no file meta, agrees with pydicom on simple attributes.
    text = json.dumps(parsed.metadata, allow_nan=False)
    assert not any(k.startswith("0002") for k in parsed.metadata)
    for keyword in SIMPLE_KEYWORDS:
        if keyword not in ds:
            continue
        simple = ds[keyword]
        try:
            theirs = simple.to_json_dict(None, 1024)
        except Exception:
            continue
        ours = parsed.metadata[f"{simple.tag:08X}"]
        assert _norm(ours) == _norm(theirs), keyword
    for level in (parsed.patient_json, parsed.study_json, parsed.series_json):
        for tag, attr in level.items():
            assert parsed.metadata[tag] is attr

    # Bulk: every marker resolves; every range reads back pydicom's bytes.
    markers = _bulk_keys(parsed.metadata)
    has_pixels = any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))
    if has_pixels:
        assert any(k in ("7FE00010", "7FE00008", "7FE00009") for k in markers)
    if parsed.deflated:
        assert parsed.bulk == {} and parsed.frames == ()
        return
    assert set(markers) <= set(parsed.bulk)
    for key, rng in parsed.bulk.items():
        elem = _element_at(ds, key)
        if elem is None or not isinstance(elem.value, bytes):
            continue
        assert _read(path, (rng,)) == elem.value, key

    rendered = render_bulk_markers(text, "https://h/i")
    assert "\\u0000bulk/" not in rendered
    assert rendered.count("https://h/i/bulkdata/") == len(markers)

    _check_frames(path, parsed, ds)
    if has_pixels and not parsed.frames:
        # Only the documented non-indexable cases may leave frames empty.
        bits = ds.get("BitsAllocated")
        frames = int(str(ds.get("NumberOfFrames", 1) or 1)) if "NumberOfFrames" in ds else 1
        assert (parsed.encapsulated and frames > 1) or bits == 1, "frames unexpectedly empty"


def test_expected_rejections_are_few() -> None:
    """Guard against the rule filter silently skipping the whole sample set."""
    rejected = [e["file"] for e in ACCEPTED if rule_violation(e) is not None]
    assert len(rejected) < 40
    assert len(ACCEPTED) - len(rejected) > 180


# --- hostile input ----------------------------------------------------------------------------

FUZZ_FILES = [
    "files/pydicom-wheel/test_files/CT_small.dcm",
    "files/pydicom-wheel/test_files/MR_small_bigendian.dcm",
    "files/pydicom-wheel/test_files/MR_small_implicit.dcm",
    "files/pydicom-wheel/test_files/image_dfl.dcm",
    "files/pydicom-wheel/test_files/emri_small_jpeg_2k_lossless.dcm",
    "files/pydicom-wheel/test_files/SC_rgb_rle_2frame.dcm",
    "files/pydicom-wheel/test_files/nested_priv_SQ.dcm",
]


def _fuzz_sources() -> list[str]:
    return [f for f in FUZZ_FILES if (SAMPLES / f).is_file()]


def _parse_or_invalid(path: Path) -> None:
    try:
        parse_instance(path)
    except InvalidDicom:
        pass


@pytest.mark.parametrize("source", _fuzz_sources())
def test_random_truncation_raises_only_invalid_dicom(source: str, tmp_path: Path) -> None:
    data = (SAMPLES / source).read_bytes()
    rng = random.Random(1234)
    points = {0, 1, 127, 128, 131, 132, 140, len(data) - 1, len(data) // 2}
    points |= {rng.randrange(0, len(data)) for _ in range(25)}
    target = tmp_path / "t.dcm"
    for point in sorted(points):
        target.write_bytes(data[:point])
        _parse_or_invalid(target)


@pytest.mark.parametrize("source", _fuzz_sources())
def test_random_byte_flips_raise_only_invalid_dicom(source: str, tmp_path: Path) -> None:
    data = (SAMPLES / source).read_bytes()
    rng = random.Random(99)
    target = tmp_path / "f.dcm"
    header_end = min(len(data), 4096)
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            # Bias towards the header, where the structure lives.
            pos = rng.randrange(128, header_end) if rng.random() < 0.8 else rng.randrange(len(data))
            mutated[pos] = rng.randrange(256)
        target.write_bytes(bytes(mutated))
        _parse_or_invalid(target)


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    rng = random.Random(7)
    target = tmp_path / "g.dcm"
    for blob in (
        b"",
        b"DICM",
        b"\x00" * 128 + b"DICM",
        b"\x00" * 128 + b"DICM" + bytes(rng.randrange(256) for _ in range(500)),
        bytes(rng.randrange(256) for _ in range(4000)),
    ):
        target.write_bytes(blob)
        with pytest.raises(InvalidDicom):
            parse_instance(target)


def _minimal(tmp_path: Path, name: str = "x.dcm") -> tuple[Dataset, Path]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = UID("1.2.3.4.5")
    ds.StudyInstanceUID = UID("1.2.3")
    ds.SeriesInstanceUID = UID("1.2.3.4")
    ds.PatientName = "Doe^John"
    ds.Modality = "OT"
    return ds, tmp_path / name


def test_deep_nesting_is_rejected(tmp_path: Path) -> None:
    ds, path = _minimal(tmp_path)
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(40):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidDicom, match="nested deeper"):
        parse_instance(path)
    parsed = parse_instance(path, max_sequence_depth=64)
    assert parsed.sop_instance_uid == "1.2.3.4.5"


def test_absurd_length_is_rejected(tmp_path: Path) -> None:
    ds, path = _minimal(tmp_path)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    # (0010,0010) PN with a 2-byte length: append an OB element claiming ~4 GiB.
    hostile = data + b"\x09\x00\x10\x10OB\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") + b"ab"
    path.write_bytes(hostile)
    with pytest.raises(InvalidDicom, match="runs past"):
        parse_instance(path)


def test_rule_violations(tmp_path: Path) -> None:
    ds, path = _minimal(tmp_path)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"1.2.3.4.5", b"1.2.3.4.6", 1))  # in the File Meta group
    # A differing Media Storage SOP Instance UID is tolerated: the data set is authoritative.
    assert parse_instance(path).sop_instance_uid == "1.2.3.4.5"

    ds, path = _minimal(tmp_path)
    del ds.StudyInstanceUID
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidDicom, match="StudyInstanceUID"):
        parse_instance(path)

    ds, path = _minimal(tmp_path)
    ds.SeriesInstanceUID = UID("1.2..3")
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidDicom, match="SeriesInstanceUID"):
        parse_instance(path)


def test_minimal_instance_fields(tmp_path: Path) -> None:
    ds, path = _minimal(tmp_path)
    ds.SeriesNumber = "7"
    ds.InstanceNumber = "91"  # patched below to an invalid IS
    ds.StudyDate = "20240102"
    ds.ReferringPhysicianName = "Ref^Doc=R^D"
    ds.ContentSequence = Sequence([Dataset()])
    ds.ContentSequence[0].add_new(0x00091010, "OB", b"\x01" * 2000)  # nested private bulk
    ds.add_new(0x00090010, "LO", "ACME")
    ds.EncapsulatedDocument = b"%PDF" + b"\x00" * 3000
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    is_header = b"\x20\x00\x13\x00IS\x02\x00"
    path.write_bytes(data.replace(is_header + b"91", is_header + b"x1"))
    parsed = parse_instance(path)
    assert parsed.patient["patient_name"] == "Doe^John"
    assert parsed.study["study_date"] == "20240102"
    assert parsed.study["referring_physician_name"] == "Ref^Doc"
    assert parsed.series["series_number"] == 7
    assert parsed.instance["instance_number"] is None
    assert parsed.metadata["00200013"]["Value"] == [None]  # not a number: null (PS3.18 F.2.3)
    assert parsed.metadata["00080090"]["Value"] == [{"Alphabetic": "Ref^Doc", "Ideographic": "R^D"}]
    assert set(parsed.bulk) == {"0040A730/0/00091010", "00420011"}
    assert parsed.metadata["0040A730"]["Value"][0]["00091010"]["BulkDataURI"] == (
        MARKER + "0040A730/0/00091010"
    )
    assert parsed.frames == () and not parsed.encapsulated
    assert "00100010" in parsed.patient_json and "00080020" in parsed.study_json
    assert "00080060" in parsed.series_json and "00080090" not in parsed.series_json


def test_render_bulk_markers_respects_escaping() -> None:
    meta = {
        "7FE00010": {"vr": "OW", "BulkDataURI": MARKER + "7FE00010"},
        "00204000": {"vr": "LT", "Value": ["\\u0000bulk/not-a-marker"]},
    }
    out = json.loads(render_bulk_markers(json.dumps(meta), "http://x/studies/1/"))
    assert out["7FE00010"]["BulkDataURI"] == "http://x/studies/1/bulkdata/7FE00010"
    assert out["00204000"]["Value"] == ["\\u0000bulk/not-a-marker"]


def test_zero_preamble(tmp_path: Path) -> None:
    ds, path = _minimal(tmp_path)
    ds.preamble = b"\x7fELF" + b"\x01" * 124
    ds.save_as(path, enforce_file_format=True)
    before = path.read_bytes()
    zero_preamble(path)
    after = path.read_bytes()
    assert after[:128] == b"\x00" * 128 and after[128:] == before[128:]
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    with pytest.raises(InvalidDicom):
        zero_preamble(short)
