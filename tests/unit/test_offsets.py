"""The raw element walker and the frame mapping, on files built with pydicom."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomhub.dicom.model import ByteRange, ParsedInstance
from dicomhub.dicom.offsets import implicit_vr, read_file_meta, walk_dataset
from dicomhub.dicom.parse import parse_instance
from dicomhub.errors import InvalidDicom

pytestmark = pytest.mark.filterwarnings("ignore")


def _dataset(ts: UID) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = UID("1.2.3.4.5")
    ds.StudyInstanceUID = UID("1.2.3")
    ds.SeriesInstanceUID = UID("1.2.3.4")
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    return ds


def _read(path: Path, ranges: tuple[ByteRange, ...]) -> bytes:
    data = path.read_bytes()
    return b"".join(data[r.offset : r.offset + r.length] for r in ranges)


def _frames_bytes(path: Path, parsed: ParsedInstance) -> list[bytes]:
    return [_read(path, ranges) for ranges in parsed.frames]


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_native_multiframe_and_nested_bulk(ts: UID, tmp_path: Path) -> None:
    ds = _dataset(ts)
    ds.NumberOfFrames = 3
    ds.PixelData = bytes(range(48))
    item = Dataset()
    item.ReferencedSOPInstanceUID = UID("1.2.3.9")
    inner = Dataset()
    inner.add_new(0x00091010, "OB", b"\x07" * 3000)  # private, nested two levels deep
    item.add_new(0x00090010, "LO", "ACME")
    item.ReferencedImageSequence = Sequence([inner])
    ds.ReferencedSeriesSequence = Sequence([Dataset(), item])
    path = tmp_path / "n.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=ts != ExplicitVRBigEndian)
    parsed = parse_instance(path)
    assert _frames_bytes(path, parsed) == [bytes(range(48))[i * 16 : i * 16 + 16] for i in range(3)]
    key = "00081115/1/00081140/0/00091010"
    assert _read(path, (parsed.bulk[key],)) == b"\x07" * 3000
    nested = parsed.metadata["00081115"]["Value"][1]["00081140"]["Value"][0]["00091010"]
    assert nested["BulkDataURI"].endswith(key)
    assert parsed.metadata["7FE00010"]["vr"] in ("OB", "OW")


def test_native_pixel_data_too_short(tmp_path: Path) -> None:
    ds = _dataset(ExplicitVRLittleEndian)
    ds.NumberOfFrames = 4
    ds.PixelData = bytes(48)  # 3 frames of 16 bytes, 4 claimed
    path = tmp_path / "short.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidDicom, match="too short"):
        parse_instance(path)


def _jpeg_frame(n: int, size: int) -> bytes:
    body = bytes((n * 7 + i) % 200 for i in range(size))  # no 0xFF bytes: no markers
    return b"\xff\xd8" + body + b"\xff\xd9"


def _write_encapsulated(
    tmp_path: Path, ts: UID, pixel_data: bytes, number_of_frames: str | None, name: str
) -> Path:
    ds = _dataset(ts)
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("has_bot", [True, False])
def test_encapsulated_fragments_per_frame(has_bot: bool, tmp_path: Path) -> None:
    frames = [_jpeg_frame(i, 301 + i) for i in range(3)]  # odd sizes: padded with 00
    path = _write_encapsulated(
        tmp_path,
        JPEGBaseline8Bit,
        encapsulate(frames, fragments_per_frame=3, has_bot=has_bot),
        "3",
        "j.dcm",
    )
    parsed = parse_instance(path)
    assert parsed.encapsulated
    assert len(parsed.frames) == 3 and all(len(f) == 3 for f in parsed.frames)
    got = _frames_bytes(path, parsed)
    expected = list(generate_frames(encapsulate(frames, 3, has_bot=True), number_of_frames=3))
    assert got == expected
    assert [g.rstrip(b"\x00") for g in got] == frames


def test_encapsulated_extended_offset_table(tmp_path: Path) -> None:
    frames = [bytes([i]) * 40 for i in range(4)]
    pixel_data, offsets, lengths = encapsulate_extended(frames)
    ds = _dataset(RLELossless)
    ds.NumberOfFrames = 4
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.ExtendedOffsetTable = offsets
    ds.ExtendedOffsetTableLengths = lengths
    path = tmp_path / "eot.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert _frames_bytes(path, parse_instance(path)) == frames


def test_encapsulated_ambiguous_is_not_indexable(tmp_path: Path) -> None:
    frames = [bytes([i + 1]) * 64 for i in range(2)]  # RLE-like: no end marker
    path = _write_encapsulated(
        tmp_path, RLELossless, encapsulate(frames, 2, has_bot=False), "2", "rle.dcm"
    )
    parsed = parse_instance(path)
    assert parsed.encapsulated and parsed.frames == ()
    assert "7FE00010" in parsed.bulk


@pytest.mark.parametrize("number_of_frames", [None, "1A"])
def test_encapsulated_bad_number_of_frames(number_of_frames: str | None, tmp_path: Path) -> None:
    frames = [_jpeg_frame(i, 100) for i in range(2)]
    path = _write_encapsulated(
        tmp_path,
        JPEGBaseline8Bit,
        encapsulate(frames, 2, has_bot=False),
        None,
        "nf.dcm",
    )
    if number_of_frames is not None:
        data = path.read_bytes()
        tag = b"\x28\x00\x08\x00IS\x02\x00"
        cut = data.index(b"\x28\x00\x10\x00")  # insert before Rows
        path.write_bytes(data[:cut] + tag + number_of_frames.encode() + data[cut:])
    parsed = parse_instance(path)
    assert parsed.instance["number_of_frames"] is None
    assert _frames_bytes(path, parsed) == frames  # the codestreams say 2 frames


def test_walker_rejects_bad_structure() -> None:
    header = b"\x00" * 128 + b"DICM"
    meta_ts = b"1.2.840.10008.1.2.1\x00"
    meta = b"\x02\x00\x10\x00UI" + len(meta_ts).to_bytes(2, "little") + meta_ts
    buf = header + meta
    parsed_meta = read_file_meta(buf, len(buf))
    assert parsed_meta.text(0x00020010) == "1.2.840.10008.1.2.1"
    start = parsed_meta.dataset_offset

    def walk(body: bytes) -> None:
        data = buf + body
        walk_dataset(
            data, len(data), start, implicit=False, little=True, bulk_threshold=8, max_depth=4
        )

    walk(b"\x10\x00\x10\x00PN\x04\x00Doe^")
    with pytest.raises(InvalidDicom):
        walk(b"\x10\x00\x10\x00PN\x40\x00Doe^")  # length past the end
    with pytest.raises(InvalidDicom):
        walk(b"\x10\x00\x10\x00PN")  # truncated header
    with pytest.raises(InvalidDicom):
        # undefined-length sequence without delimiter
        walk(b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x00\x00\x00\x00")
    with pytest.raises(InvalidDicom):
        walk(b"\x08\x00\x15\x11SQ\x00\x00\x08\x00\x00\x00\x10\x00\x10\x00\x00\x00\x00\x00")


def test_implicit_vr_lookup() -> None:
    assert implicit_vr(0x00100010) == "PN"
    assert implicit_vr(0x7FE00010) == "OW"
    assert implicit_vr(0x00090010) == "LO"
    assert implicit_vr(0x00091001) == "UN"
    assert implicit_vr(0x00280000) == "UL"
    assert implicit_vr(0x60003000) in ("OB", "OW")
