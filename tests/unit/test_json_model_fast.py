"""The single-pass fast path of parse_instance against the pydicom path it replaces.

The pydicom path (``pydicom.dcmread`` + :func:`dicomhub.dicom.json_model.dataset_to_json`) is
the reference implementation: it is what parse_instance did before the fast path and is still
its fallback. Every sample file, a small corpus made by the bench generator and randomly built
values of every VR must give the very same ParsedInstance, or the same error.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

import dicomhub.dicom.parse as parse_module
from dicomhub.dicom.model import ParsedInstance
from dicomhub.dicom.offsets import read_file_meta, walk_dataset
from dicomhub.dicom.parse import parse_instance
from dicomhub.dicom.raw_json import Unsupported, walk_and_convert
from dicomhub.errors import InvalidDicom
from tests.samples import MANIFEST, SAMPLES

pytestmark = pytest.mark.filterwarnings("ignore")

#: The bench corpus generator, shared next to the sample set.
GEN_CORPUS = SAMPLES.parent / "bench" / "gen_corpus.py"
#: Small versions of the bench presets: CT 512x512 with multi-frame US RGB and Enhanced MR, and
#: the 8x8 "tiny" images of many patients.
CORPUS_ARGS = {
    "main": ["--instances", "6", "--patients", "2", "--multiframe", "2", "--mf-frames", "3"],
    "tiny": ["--tiny", "--instances", "12"],
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _outcome(path: Path, *, fast: bool) -> ParsedInstance | str:
    """parse_instance with or without the fast path: the result or the error message."""
    try:
        if fast:
            return parse_instance(path)
        with mock.patch.object(parse_module, "walk_and_convert", side_effect=Unsupported):
            return parse_instance(path)
    except InvalidDicom as exc:
        return f"InvalidDicom: {exc}"


def _fast_path_taken(path: Path) -> bool:
    data = path.read_bytes()
    meta = read_file_meta(data, len(data))
    try:
        walk_and_convert(
            data, len(data), meta.dataset_offset, bulk_threshold=1024, max_depth=16, defer_size=1024
        )
    except Unsupported:
        return False
    return True


def _assert_same(path: Path) -> None:
    fast = _outcome(path, fast=True)
    reference = _outcome(path, fast=False)
    if isinstance(fast, ParsedInstance) and isinstance(reference, ParsedInstance):
        for name in ParsedInstance.__dataclass_fields__:
            assert getattr(fast, name) == getattr(reference, name), f"{path}: {name}"
    assert fast == reference, str(path)


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: str(e["file"]).removeprefix("files/"))
def test_sample_matches_reference(entry: dict[str, Any]) -> None:
    _assert_same(SAMPLES / entry["file"])


def test_fast_path_covers_most_samples() -> None:
    """Guard against the fast path silently falling back for ordinary files."""
    explicit = []
    for entry in MANIFEST:
        path = SAMPLES / entry["file"]
        parsed = _outcome(path, fast=True)
        if isinstance(parsed, ParsedInstance) and parsed.transfer_syntax_uid == EXPLICIT_LE:
            explicit.append(path)
    taken = [p for p in explicit if _fast_path_taken(p)]
    assert len(explicit) > 100
    assert len(taken) >= len(explicit) - 5


def test_walk_matches_offsets_walker() -> None:
    for entry in MANIFEST:
        path = SAMPLES / entry["file"]
        data = path.read_bytes()
        try:
            meta = read_file_meta(data, len(data))
            fast = walk_and_convert(
                data,
                len(data),
                meta.dataset_offset,
                bulk_threshold=1024,
                max_depth=16,
                defer_size=1024,
            )
        except (InvalidDicom, Unsupported):
            continue
        walk = walk_dataset(
            data,
            len(data),
            meta.dataset_offset,
            implicit=False,
            little=True,
            bulk_threshold=1024,
            max_depth=16,
        )
        assert fast.walk == walk, str(path)


def _generate_corpus(preset: str, out: Path) -> list[Path]:
    """Run the bench generator (deterministic output) for a small corpus of ``preset``."""
    if not GEN_CORPUS.is_file():
        pytest.fail(f"bench corpus generator missing at {GEN_CORPUS}")
    args = [sys.executable, str(GEN_CORPUS), "--out", str(out), "--workers", "1"]
    subprocess.run([*args, *CORPUS_ARGS[preset]], check=True, capture_output=True, timeout=300)
    return sorted(out.rglob("*.dcm"))


@pytest.mark.parametrize("preset", sorted(CORPUS_ARGS))
def test_bench_corpus_matches_reference(preset: str, tmp_path: Path) -> None:
    """Instances like the bench corpus take the fast path and parse exactly as pydicom does."""
    files = _generate_corpus(preset, tmp_path / preset)
    assert len(files) >= 8
    for path in files:
        assert _fast_path_taken(path), str(path)
        _assert_same(path)


# --- random values of every VR ----------------------------------------------------------------

_PIECES = [
    "",
    " ",
    "  ",
    "\x00",
    "\\",
    "=",
    "^",
    "0",
    "12",
    "-7",
    "+3",
    " 42 ",
    "1.5",
    "1.0",
    "-0.25e3",
    "1e400",
    ".",
    "e",
    "nan",
    "inf",
    "1A",
    "1_0",
    "99999999999999999999",
    "Doe^John",
    "Doe^John=山田^太郎=やまだ^たろう",
    "Müller",
    "ABC\x00DEF",
    "1.2.840.10008.1.2",
    "\t",
    "\x1b$B",
]
_TEXT_VRS = ["AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM"]
_TEXT_VRS += ["UC", "UI", "UR", "UT"]
_BINARY = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "AT": "HH"}
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
_CHARSETS: list[str | None] = [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "GB18030"]
_CODECS = {None: "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def _element(tag: int, vr: str, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG:
        return head + b"\x00\x00" + struct.pack("<L", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _random_value(rng: random.Random, vr: str, charset: str | None) -> bytes:
    if vr in _BINARY:
        code = _BINARY[vr]
        if rng.random() < 0.1:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 7)))  # odd lengths
        values: list[Any] = []
        for _ in range(rng.choice([1, 2, 3, 300])):
            if code in "fd":
                values.append(rng.choice([0.0, -1.5, 1e30, float("nan"), float("inf"), 3.25]))
            else:
                values.extend(rng.randrange(0, 0x7FFF) for _ in code)
        return struct.pack("<" + code * (len(values) // len(code)), *values)
    text = "".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 4)))
    if rng.random() < 0.05:
        text = (text + "\\") * (1100 // (len(text) + 1) + 1)  # deferred by dcmread
    codec = _CODECS.get(charset, "latin-1")
    if rng.random() < 0.2:
        codec = "utf-8"  # bytes that may not decode in the declared character set
    raw = text.encode(codec, errors="replace")
    if rng.random() < 0.3:
        raw += rng.choice([b" ", b"\x00", b"  ", b"\\", b"\\ "])
    return raw


def _random_files(tmp_path: Path, count: int) -> Iterator[Path]:
    rng = random.Random(20240611)
    for n in range(count):
        charset = rng.choice(_CHARSETS)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
        ds.file_meta.MediaStorageSOPInstanceUID = UID(f"1.2.3.{n}")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if charset is not None:
            ds.SpecificCharacterSet = charset
        ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
        ds.SOPInstanceUID = UID(f"1.2.3.{n}")
        ds.StudyInstanceUID = UID("1.2.3")
        ds.SeriesInstanceUID = UID("1.2.3.4")
        ds.PatientID = "P"
        path = tmp_path / f"r{n}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        # Splice private elements (group 0009, explicit VR) in before (0010,0020).
        at = data.index(b"\x10\x00\x20\x00LO")
        extra = _element(0x00090010, "LO", b"DICOMHUB TEST")
        vrs = _TEXT_VRS + list(_BINARY)
        for i in range(rng.randrange(5, 25)):
            vr = rng.choice(vrs)
            extra += _element(0x00091000 + i, vr, _random_value(rng, vr, charset))
        path.write_bytes(data[:at] + extra + data[at:])
        yield path


def test_random_values_match_reference(tmp_path: Path) -> None:
    for path in _random_files(tmp_path, 300):
        _assert_same(path)


def test_private_un_uses_private_dictionary(tmp_path: Path) -> None:
    """pydicom types explicit UN private elements by their creator (PS3.5 §6.2.2)."""
    paths = list(_random_files(tmp_path, 1))
    data = paths[0].read_bytes()
    at = data.index(b"\x10\x00\x20\x00LO")
    extra = _element(0x00190010, "UN", b"GEMS_ACQU_01")
    extra += _element(0x00191002, "UN", b"\x01\x00")  # GEMS_ACQU_01 (0019,xx02): SL
    extra += _element(0x00191003, "UN", b"12.5")  # (0019,xx03): DS
    extra += _element(0x001910F5, "UN", b"\x01\x02")  # unknown: stays UN
    paths[0].write_bytes(data[:at] + extra + data[at:])
    _assert_same(paths[0])
    parsed = parse_instance(paths[0])
    assert parsed.metadata["00190010"] == {"vr": "LO", "Value": ["GEMS_ACQU_01"]}
    assert parsed.metadata["001910F5"] == {"vr": "UN", "InlineBinary": "AQI="}
