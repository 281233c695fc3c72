"""WADO-RS, Retrieve Transaction (PS3.18 §10.4), through the in-process client.

Instances (study, series, instance) come back as the stored Part-10 files, byte-identical except
the zeroed preamble; metadata agrees with pydicom's reading of the files and every BulkDataURI
resolves to the element's bytes; frames are the exact native slices or encapsulated frames;
content negotiation follows PS3.18 §8.7.3; unknown resources are 404 and malformed UIDs 400,
always with a JSON reason. Samples are picked from the manifest by their properties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from starlette.testclient import TestClient

from dicomhub.web.multipart import parse_content_type
from tests.helpers import (
    ROOT,
    dicom_multipart_type,
    instance_url,
    multipart_body,
    multipart_parts,
    part10_bytes,
    series_url,
    stow_samples,
    study_url,
    zeroed,
)
from tests.samples import MANIFEST, SAMPLES, STUDY_133, is_part10

pytestmark = pytest.mark.filterwarnings("ignore")

BOUNDARY = "wado-test-boundary-91aa"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
DICOM_PART = 'multipart/related; type="application/dicom"'
OCTET_PART = 'multipart/related; type="application/octet-stream"'

BAD_TRICKS = {"pydicom-decode-fails", "derived-malformed", "bad-NumberOfFrames", "dicomdir"}


# ---------------------------------------------------------------------------------------------
# sample selection


def usable(entry: dict[str, Any]) -> bool:
    """A well-formed Part-10 file that the archive must accept."""
    return is_part10(entry) and not BAD_TRICKS & set(entry.get("tricky", []))


def consistent_meta(rel: str) -> bool:
    """Media Storage SOP Instance UID equals SOP Instance UID (PS3.10 §7.1).

    A few pydicom test files break this rule and are rightly refused by the archive.
    """
    ds = pydicom.dcmread(SAMPLES / rel, stop_before_pixels=True)
    return bool(ds.file_meta.get("MediaStorageSOPInstanceUID") == ds.get("SOPInstanceUID"))


def pick_by(pred: Callable[[dict[str, Any]], bool]) -> str:
    """The smallest usable sample whose manifest properties satisfy ``pred``."""
    found = sorted((e["size"], e["file"]) for e in MANIFEST if usable(e) and pred(e["properties"]))
    for _, rel in found:
        if consistent_meta(rel):
            return str(rel)
    raise AssertionError("no sample has the wanted properties")


def pick(
    *,
    ts: str | set[str],
    frames: Callable[[int], bool] = lambda n: True,
    extra: Callable[[dict[str, Any]], bool] = lambda p: True,
) -> str:
    """The smallest usable sample with pixel data in ``ts`` and a matching frame count."""
    wanted = {ts} if isinstance(ts, str) else ts

    def pred(p: dict[str, Any]) -> bool:
        n = p.get("NumberOfFrames")
        return bool(
            p.get("transfer_syntax") in wanted
            and p.get("has_pixel_data")
            and frames(n if isinstance(n, int) else 1)
            and extra(p)
        )

    return pick_by(pred)


def byte_pixels(p: dict[str, Any]) -> bool:
    return int(p.get("BitsAllocated") or 0) >= 8


NATIVE_SINGLE = pick(
    ts=EXPLICIT_LE, frames=lambda n: n == 1, extra=lambda p: p.get("BitsAllocated") == 16
)
NATIVE_MULTI = pick(ts={EXPLICIT_LE, IMPLICIT_LE}, frames=lambda n: n >= 5, extra=byte_pixels)
BIG_ENDIAN_MULTI = pick(ts=BIG_ENDIAN, frames=lambda n: n >= 5, extra=byte_pixels)
ENCAPSULATED_MULTI = {
    "jpeg": pick(ts=JPEG_BASELINE, frames=lambda n: n >= 5),
    "rle": pick(ts=RLE, frames=lambda n: n >= 5),
    "j2k": pick(ts=JPEG_2000_LOSSLESS, frames=lambda n: n >= 5),
    "jpeg-ls": pick(ts=JPEG_LS_LOSSLESS, frames=lambda n: n >= 5),
}
JPEG_SINGLE = pick(ts=JPEG_BASELINE, frames=lambda n: n == 1)
J2K_SINGLE = pick(ts=JPEG_2000_LOSSLESS, frames=lambda n: n == 1)
OVERLAY = pick_by(lambda p: bool(p.get("has_overlay")) and p.get("transfer_syntax") == EXPLICIT_LE)
DEFLATED = pick(ts="1.2.840.10008.1.2.1.99")
BIG_ENDIAN_16 = pick(ts=BIG_ENDIAN, extra=lambda p: p.get("BitsAllocated") == 16)
ONE_BIT_UNALIGNED = pick(
    ts={EXPLICIT_LE, IMPLICIT_LE},
    frames=lambda n: n >= 3,
    extra=lambda p: (
        p.get("BitsAllocated") == 1
        and (p["Rows"] * p["Columns"] * (p.get("SamplesPerPixel") or 1)) % 8 != 0
    ),
)
SR = pick_by(lambda p: p.get("Modality") == "SR" and not p.get("has_pixel_data"))
WAVEFORM = pick_by(lambda p: p.get("Modality") == "ECG")


# ---------------------------------------------------------------------------------------------
# helpers


def raw(rel: str) -> bytes:
    return (SAMPLES / rel).read_bytes()


def read(rel: str) -> Dataset:
    return pydicom.dcmread(SAMPLES / rel)


def stow(client: TestClient, *files: str) -> None:
    stow_samples(client, *files, boundary=BOUNDARY, quote_boundary=True)


def get(client: TestClient, url: str, accept: str | None = "*/*") -> httpx.Response:
    """GET with the given Accept header; None sends no Accept header at all."""
    request = client.build_request("GET", url)
    if accept is None:
        del request.headers["accept"]
    else:
        request.headers["accept"] = accept
    resp: httpx.Response = client.send(request)
    return resp


def media_type(resp: httpx.Response) -> tuple[str, dict[str, str]]:
    return parse_content_type(resp.headers["content-type"])


def assert_error(resp: httpx.Response, *statuses: int) -> str:
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    reason = resp.json()["error"]
    assert isinstance(reason, str)
    assert reason.strip()
    return str(reason)


def assert_dicom_parts(resp: httpx.Response, files: list[str]) -> None:
    """A multipart/related application/dicom response holding exactly these files."""
    assert resp.status_code == 200, resp.text[:300]
    media, params = media_type(resp)
    assert media == "multipart/related"
    assert params["type"].lower() == "application/dicom"
    parts = multipart_parts(resp)
    assert sorted(p[1] for p in parts) == sorted(zeroed(raw(f)) for f in files)
    syntaxes = {str(read(f).file_meta.TransferSyntaxUID) for f in files}
    for headers, _ in parts:
        part_media, part_params = parse_content_type(headers["content-type"])
        assert part_media == "application/dicom"
        assert part_params.get("transfer-syntax") in syntaxes


@pytest.fixture
def study133(client: TestClient) -> list[Dataset]:
    stow(client, *STUDY_133)
    return [read(f) for f in STUDY_133]


# ---------------------------------------------------------------------------------------------
# instances


def test_retrieve_study_series_instance(client: TestClient, study133: list[Dataset]) -> None:
    first, second = study133[0], study133[1]
    assert_dicom_parts(get(client, study_url(first)), STUDY_133)
    assert_dicom_parts(get(client, series_url(first)), STUDY_133[:1])
    assert_dicom_parts(get(client, series_url(second)), STUDY_133[1:])
    for f, ds in zip(STUDY_133, study133, strict=True):
        assert_dicom_parts(get(client, instance_url(ds)), [f])


def test_retrieve_compressed_instance_keeps_its_transfer_syntax(client: TestClient) -> None:
    stow(client, JPEG_SINGLE)
    ds = read(JPEG_SINGLE)
    resp = get(client, instance_url(ds), f"{DICOM_PART}; transfer-syntax=*")
    assert_dicom_parts(resp, [JPEG_SINGLE])
    ((headers, _),) = multipart_parts(resp)
    assert parse_content_type(headers["content-type"])[1]["transfer-syntax"] == JPEG_BASELINE


@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        None,
        "",
        "multipart/related",
        DICOM_PART,
        f"{DICOM_PART}; transfer-syntax=*",
        f"{DICOM_PART}; transfer-syntax={EXPLICIT_LE}",
        f"application/json, {DICOM_PART}; q=0.5",
        f"{DICOM_PART}; transfer-syntax={JPEG_BASELINE}, {DICOM_PART}; q=0.1",
    ],
    ids=[
        "any",
        "no-accept",
        "empty-accept",
        "multipart-without-type",
        "dicom",
        "any-syntax",
        "stored-syntax",
        "json-or-dicom",
        "jpeg-or-any",
    ],
)
def test_accept_variants_for_instances(
    client: TestClient, study133: list[Dataset], accept: str | None
) -> None:
    assert_dicom_parts(get(client, series_url(study133[1]), accept), STUDY_133[1:])


@pytest.mark.parametrize(
    "accept",
    [
        f"{DICOM_PART}; transfer-syntax={JPEG_BASELINE}",
        f"{DICOM_PART}; transfer-syntax={BIG_ENDIAN}",
        "application/json",
        "application/dicom+json",
        'multipart/related; type="image/jpeg"',
        f"{DICOM_PART}; q=0",
    ],
    ids=["jpeg", "big-endian", "json", "dicom-json", "jpeg-parts", "q0"],
)
def test_unsatisfiable_accept_for_instances_is_406(
    client: TestClient, study133: list[Dataset], accept: str
) -> None:
    assert_error(get(client, series_url(study133[1]), accept), 406)
    assert_error(get(client, instance_url(study133[1]), accept), 406)


def test_single_part_application_dicom(client: TestClient, study133: list[Dataset]) -> None:
    ds = study133[1]
    for accept in ("application/dicom", f"application/dicom; transfer-syntax={EXPLICIT_LE}"):
        resp = get(client, instance_url(ds), accept)
        assert resp.status_code == 200, resp.text[:300]
        media, params = media_type(resp)
        assert media == "application/dicom"
        assert params.get("transfer-syntax", EXPLICIT_LE) == EXPLICIT_LE
        assert resp.content == zeroed(raw(STUDY_133[1]))
    # Three instances cannot be one application/dicom body.
    assert_error(get(client, series_url(ds), "application/dicom"), 406)


def test_specific_transfer_syntax_is_honoured_for_every_instance(
    client: TestClient, study133: list[Dataset]
) -> None:
    """A study holding JPEG and uncompressed instances cannot be sent in one syntax only.

    Without transcoding, a request for Explicit VR Little Endian must not get JPEG parts (nor
    the reverse): the answer is 406, or parts that are all in the requested syntax.
    """
    jpeg = read(JPEG_SINGLE)
    jpeg.StudyInstanceUID = study133[0].StudyInstanceUID
    resp = client.post(
        f"{ROOT}/studies",
        content=multipart_body([part10_bytes(jpeg)], BOUNDARY),
        headers={"Content-Type": dicom_multipart_type(BOUNDARY)},
    )
    assert resp.status_code == 200, resp.text[:300]
    # Any syntax: all five instances, each labelled with its own syntax.
    resp = get(client, study_url(study133[0]), f"{DICOM_PART}; transfer-syntax=*")
    labels = [
        parse_content_type(h["content-type"])[1]["transfer-syntax"]
        for h, _ in multipart_parts(resp)
    ]
    assert sorted(labels) == sorted([EXPLICIT_LE] * 4 + [JPEG_BASELINE])
    for ts in (EXPLICIT_LE, JPEG_BASELINE):
        resp = get(client, study_url(study133[0]), f"{DICOM_PART}; transfer-syntax={ts}")
        if resp.status_code == 406:
            assert_error(resp, 406)
            continue
        assert resp.status_code == 200, resp.text[:300]
        for headers, _ in multipart_parts(resp):
            assert parse_content_type(headers["content-type"])[1].get("transfer-syntax") == ts, (
                f"asked for {ts}, got {headers['content-type']}"
            )


# ---------------------------------------------------------------------------------------------
# metadata and bulk data

COMMON = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "PixelSpacing",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
]


def assert_metadata_matches(item: dict[str, Any], original: Dataset) -> None:
    got = Dataset.from_json(item, bulk_data_uri_handler=lambda uri: b"")
    checked = 0
    for kw in COMMON:
        if kw not in original:
            continue
        want, have = original[kw].value, got.get(kw)
        if want in (None, ""):
            assert have in (None, ""), (kw, have)
            continue
        assert have is not None, f"{kw} missing from metadata"
        assert have == want or str(have) == str(want), (kw, have, want)
        checked += 1
    assert checked >= 8
    # Every top-level attribute of the data set (not the File Meta Information) is present.
    want_tags = {int(e.tag) for e in original if e.tag.group != 2 and e.tag != 0xFFFCFFFC}
    assert {int(k, 16) for k in item} == want_tags


def test_metadata_at_three_levels(client: TestClient, study133: list[Dataset]) -> None:
    by_uid = {ds.SOPInstanceUID: ds for ds in study133}
    cases = [
        (study_url(study133[0]), set(by_uid)),
        (series_url(study133[1]), {ds.SOPInstanceUID for ds in study133[1:]}),
        (instance_url(study133[2]), {study133[2].SOPInstanceUID}),
    ]
    for url, uids in cases:
        resp = get(client, f"{url}/metadata", "application/dicom+json")
        assert resp.status_code == 200, resp.text[:300]
        assert resp.headers["content-type"].startswith("application/dicom+json")
        items = resp.json()
        assert isinstance(items, list)
        assert {i["00080018"]["Value"][0] for i in items} == uids
        for item in items:
            assert_metadata_matches(item, by_uid[item["00080018"]["Value"][0]])
    # Any Accept that admits JSON works; others are 406.
    for accept in ("*/*", "application/json", None):
        assert get(client, f"{cases[2][0]}/metadata", accept).status_code == 200
    assert_error(get(client, f"{cases[2][0]}/metadata", "application/dicom"), 406)


def bulk_elements(
    item: dict[str, Any], ds: Dataset
) -> Iterator[tuple[str, str, pydicom.DataElement]]:
    """(path, BulkDataURI, pydicom element) for every bulk reference, nested ones included."""
    for key, attr in item.items():
        elem = ds[int(key, 16)]
        if "BulkDataURI" in attr:
            yield key, attr["BulkDataURI"], elem
        if attr.get("vr") == "SQ":
            for i, sub in enumerate(attr.get("Value", [])):
                for path, uri, e in bulk_elements(sub, elem.value[i]):
                    yield f"{key}/{i}/{path}", uri, e


def bulk_bytes(client: TestClient, uri: str) -> bytes:
    resp = get(client, uri)
    assert resp.status_code == 200, (uri, resp.text[:300])
    if media_type(resp)[0] == "multipart/related":
        ((headers, data),) = multipart_parts(resp)
        assert parse_content_type(headers["content-type"])[0] == "application/octet-stream"
        return data
    assert media_type(resp)[0] == "application/octet-stream"
    return resp.content


@pytest.mark.parametrize(
    "rel",
    [NATIVE_SINGLE, OVERLAY, WAVEFORM, JPEG_SINGLE, "files/pydicom-wheel/test_files/CT_small.dcm"],
)
def test_bulk_data_uris_resolve(client: TestClient, rel: str) -> None:
    stow(client, rel)
    ds = read(rel)
    resp = get(client, f"{instance_url(ds)}/metadata", "application/dicom+json")
    assert resp.status_code == 200
    (item,) = resp.json()
    assert_metadata_matches(item, ds)
    refs = list(bulk_elements(item, ds))
    assert refs, "no BulkDataURI in the metadata"
    if ds.get("PixelData") is not None:
        assert "7FE00010" in [path for path, _, _ in refs]
    for path, uri, elem in refs:
        assert uri.startswith(f"http://testserver{instance_url(ds)}/"), uri
        assert bulk_bytes(client, uri) == bytes(elem.value), path
        # Plain application/octet-stream is also acceptable for bulk data.
        resp = get(client, uri, "application/octet-stream")
        assert resp.status_code == 200
        assert resp.content == bytes(elem.value), path


def test_overlay_and_nested_bulk_data_are_referenced(client: TestClient) -> None:
    for rel in (OVERLAY, WAVEFORM):
        stow(client, rel)
        ds = read(rel)
        (item,) = get(client, f"{instance_url(ds)}/metadata").json()
        paths = [path for path, _, _ in bulk_elements(item, ds)]
        if rel == OVERLAY:
            assert "60003000" in paths
        else:
            assert any(p.startswith("54000100/0/") for p in paths), paths


def test_bulk_data_of_big_endian_instance_is_little_endian(client: TestClient) -> None:
    """Uncompressed bulk data is a stream of bytes in Little Endian order (PS3.18 §8.7.3.3.1)."""
    stow(client, BIG_ENDIAN_16)
    ds = read(BIG_ENDIAN_16)
    (item,) = get(client, f"{instance_url(ds)}/metadata").json()
    uri = item["7FE00010"]["BulkDataURI"]
    little = np.frombuffer(ds.PixelData, dtype=">u2").astype("<u2").tobytes()
    assert bulk_bytes(client, uri) == little


def test_bulk_data_of_deflated_instance_resolves(client: TestClient) -> None:
    """Every BulkDataURI in the metadata must be retrievable, also for a deflated data set."""
    stow(client, DEFLATED)
    ds = read(DEFLATED)
    (item,) = get(client, f"{instance_url(ds)}/metadata").json()
    assert_metadata_matches(item, ds)
    refs = list(bulk_elements(item, ds))
    assert refs
    for path, uri, elem in refs:
        assert bulk_bytes(client, uri) == bytes(elem.value), path


def test_unknown_bulk_data_is_404(client: TestClient) -> None:
    stow(client, NATIVE_SINGLE)
    ds = read(NATIVE_SINGLE)
    assert_error(get(client, f"{instance_url(ds)}/bulkdata/00100010"), 404)
    assert_error(get(client, f"{instance_url(ds)}/bulkdata/no/such/key"), 404)


# ---------------------------------------------------------------------------------------------
# frames


def native_frame(ds: Dataset, number: int) -> bytes:
    count = int(ds.get("NumberOfFrames") or 1)
    pixels: bytes = ds.PixelData
    size = len(pixels) // count
    bits = int(ds.BitsAllocated)
    frame = pixels[(number - 1) * size : number * size]
    if not ds.is_little_endian and bits > 8:
        frame = np.frombuffer(frame, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return frame


def frames_response(
    client: TestClient, ds: Dataset, numbers: str, accept: str | None = "*/*"
) -> list[tuple[dict[str, str], bytes]]:
    resp = get(client, f"{instance_url(ds)}/frames/{numbers}", accept)
    assert resp.status_code == 200, resp.text[:300]
    return multipart_parts(resp)


@pytest.mark.parametrize("rel", [NATIVE_SINGLE, DEFLATED], ids=["explicit-le", "deflated"])
def test_native_single_frame(client: TestClient, rel: str) -> None:
    stow(client, rel)
    ds = read(rel)
    ((headers, data),) = frames_response(client, ds, "1")
    media, params = parse_content_type(headers["content-type"])
    assert media == "application/octet-stream"
    assert params.get("transfer-syntax", EXPLICIT_LE) == EXPLICIT_LE
    assert data == ds.PixelData
    # A single frame may also be asked for as a single-part octet-stream body.
    resp = get(client, f"{instance_url(ds)}/frames/1", "application/octet-stream")
    assert resp.status_code == 200
    assert media_type(resp)[0] == "application/octet-stream"
    assert resp.content == ds.PixelData


@pytest.mark.parametrize("rel", [NATIVE_MULTI, BIG_ENDIAN_MULTI], ids=["little", "big-endian"])
def test_native_multi_frame(client: TestClient, rel: str) -> None:
    stow(client, rel)
    ds = read(rel)
    count = int(ds.NumberOfFrames)
    for n in (1, 2, count):
        ((_, data),) = frames_response(client, ds, str(n))
        assert data == native_frame(ds, n), n
    parts = frames_response(client, ds, "1,3,5")
    assert [p[1] for p in parts] == [native_frame(ds, n) for n in (1, 3, 5)]
    parts = frames_response(client, ds, "5,1,3")
    assert [p[1] for p in parts] == [native_frame(ds, n) for n in (5, 1, 3)]


def test_single_bit_frames_not_byte_aligned(client: TestClient) -> None:
    """1-bit frames whose pixel count is not a multiple of 8 share bytes in the file.

    Each frame returned must hold exactly that frame's pixels, starting at bit 0 of its first
    byte: ceil(pixels / 8) bytes, padding bits after the last pixel.
    """
    stow(client, ONE_BIT_UNALIGNED)
    ds = read(ONE_BIT_UNALIGNED)
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, dtype=np.uint8), bitorder="little")
    count = int(ds.NumberOfFrames)
    for n in (1, 2, count):
        ((_, data),) = frames_response(client, ds, str(n))
        assert len(data) == (pixels + 7) // 8, n
        got = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[:pixels]
        assert np.array_equal(got, bits[(n - 1) * pixels : n * pixels]), n


@pytest.mark.parametrize("kind", list(ENCAPSULATED_MULTI))
def test_encapsulated_multi_frame(client: TestClient, kind: str) -> None:
    rel = ENCAPSULATED_MULTI[kind]
    stow(client, rel)
    ds = read(rel)
    ts = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.NumberOfFrames)
    expected = [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=count)]
    assert len(expected) == count
    for n in range(1, count + 1):
        ((headers, data),) = frames_response(client, ds, str(n))
        assert data == expected[n - 1], n
        assert parse_content_type(headers["content-type"])[1].get("transfer-syntax") == ts
    parts = frames_response(client, ds, "1,3,5")
    assert [p[1] for p in parts] == [expected[0], expected[2], expected[4]]
    location = [p[0].get("content-location", "") for p in parts]
    if any(location):
        assert [loc.rsplit("/", 1)[-1] for loc in location] == ["1", "3", "5"]


@pytest.mark.parametrize(
    ("rel", "media"),
    [
        (ENCAPSULATED_MULTI["jpeg"], "image/jpeg"),
        (ENCAPSULATED_MULTI["j2k"], "image/jp2"),
        (ENCAPSULATED_MULTI["rle"], "image/dicom-rle"),
        (ENCAPSULATED_MULTI["jpeg-ls"], "image/jls"),
    ],
    ids=["jpeg", "j2k", "rle", "jpeg-ls"],
)
def test_accept_for_compressed_frames(client: TestClient, rel: str, media: str) -> None:
    stow(client, rel)
    ds = read(rel)
    ts = str(ds.file_meta.TransferSyntaxUID)
    first = bytes(
        next(iter(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))))
    )
    url = f"{instance_url(ds)}/frames/1"

    # The frame's own media type, as multipart (PS3.18 Table 8.7.3-5).
    for accept in (f'multipart/related; type="{media}"', "*/*"):
        ((headers, data),) = frames_response(client, ds, "1", accept)
        part_media, params = parse_content_type(headers["content-type"])
        assert part_media == media
        assert params.get("transfer-syntax") == ts
        assert data == first
    # Compressed bytes as octet-stream when any transfer syntax is acceptable.
    for accept in (f"{OCTET_PART}; transfer-syntax=*", f"{OCTET_PART}; transfer-syntax={ts}"):
        ((headers, data),) = frames_response(client, ds, "1", accept)
        part_media, params = parse_content_type(headers["content-type"])
        assert part_media == "application/octet-stream"
        assert params.get("transfer-syntax") == ts
        assert data == first
    # octet-stream without transfer-syntax means uncompressed (Explicit VR Little Endian),
    # which the archive cannot produce from compressed frames.
    for accept in ("application/octet-stream", OCTET_PART):
        assert_error(get(client, url, accept), 406)
    other = "image/jp2" if media != "image/jp2" else "image/jpeg"
    assert_error(get(client, url, f'multipart/related; type="{other}"'), 406)


def test_accept_for_native_frames(client: TestClient) -> None:
    stow(client, NATIVE_SINGLE)
    ds = read(NATIVE_SINGLE)
    url = f"{instance_url(ds)}/frames/1"
    for accept in (
        OCTET_PART,
        f"{OCTET_PART}; transfer-syntax=*",
        f"{OCTET_PART}; transfer-syntax={EXPLICIT_LE}",
    ):
        ((_, data),) = frames_response(client, ds, "1", accept)
        assert data == ds.PixelData
    for accept in (
        'multipart/related; type="image/jpeg"',
        f"{OCTET_PART}; transfer-syntax={JPEG_BASELINE}",
    ):
        assert_error(get(client, url, accept), 406)


@pytest.mark.parametrize(
    ("frames", "statuses"),
    [
        ("0", (400,)),
        ("-1", (400,)),
        ("abc", (400,)),
        ("1,,2", (400,)),
        ("1.5", (400,)),
        ("0x1", (400,)),
        ("{past}", (400, 404)),
        ("1,{past}", (400, 404)),
        ("99999999999999999999", (400, 404)),
    ],
    ids=[
        "zero",
        "negative",
        "text",
        "empty-item",
        "fraction",
        "hex",
        "past-end",
        "one-past-end",
        "huge",
    ],
)
def test_bad_frame_numbers(client: TestClient, frames: str, statuses: tuple[int, ...]) -> None:
    encapsulated = ENCAPSULATED_MULTI["rle"]
    stow(client, encapsulated, NATIVE_MULTI, NATIVE_SINGLE)
    for rel in (encapsulated, NATIVE_MULTI, NATIVE_SINGLE):
        ds = read(rel)
        past = str(int(ds.get("NumberOfFrames") or 1) + 1)
        url = f"{instance_url(ds)}/frames/{frames.format(past=past)}"
        assert_error(get(client, url), *statuses)


def test_frames_of_instance_without_pixel_data(client: TestClient) -> None:
    stow(client, SR, WAVEFORM)
    for rel in (SR, WAVEFORM):
        ds = read(rel)
        assert "PixelData" not in ds
        resp = get(client, f"{instance_url(ds)}/frames/1")
        assert_error(resp, 400, 404, 406, 409)


# ---------------------------------------------------------------------------------------------
# unknown resources and malformed UIDs


def test_unknown_resources_are_404(client: TestClient, study133: list[Dataset]) -> None:
    ds = study133[1]
    unknown = "1.2.826.0.1.3680043.99.404"
    urls = [
        f"{ROOT}/studies/{unknown}",
        f"{study_url(ds)}/series/{unknown}",
        f"{series_url(ds)}/instances/{unknown}",
        # The instance exists, but not under that series / study.
        f"{series_url(study133[0])}/instances/{ds.SOPInstanceUID}",
        f"{ROOT}/studies/{unknown}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
    ]
    for url in urls:
        assert_error(get(client, url), 404)
        assert_error(get(client, f"{url}/metadata"), 404)
    assert_error(get(client, f"{urls[2]}/frames/1"), 404)
    assert_error(get(client, f"{urls[2]}/bulkdata/7FE00010"), 404)


@pytest.mark.parametrize(
    "bad",
    ["1.2.abc", "1." + "2" * 63, "1..2", "1.2.", "%20", "1.2%0A3"],
    ids=["letters", "65-chars", "empty-component", "trailing-dot", "space", "newline"],
)
def test_malformed_uids_are_400(client: TestClient, study133: list[Dataset], bad: str) -> None:
    ds = study133[1]
    urls = [
        f"{ROOT}/studies/{bad}",
        f"{study_url(ds)}/series/{bad}",
        f"{series_url(ds)}/instances/{bad}",
        f"{ROOT}/studies/{bad}/metadata",
        f"{study_url(ds)}/series/{bad}/metadata",
        f"{series_url(ds)}/instances/{bad}/metadata",
        f"{series_url(ds)}/instances/{bad}/frames/1",
        f"{ROOT}/studies/{bad}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
    ]
    for url in urls:
        assert_error(get(client, url), 400)
