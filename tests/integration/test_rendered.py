"""WADO-RS rendered and thumbnail resources over HTTP (PS3.18 §10.4.1.1.3, §8.3.5).

Every storable sample is rendered at instance, frame and thumbnail level (or refused with a
4xx naming the problem); study/series multipart, query parameters, animated GIF, encapsulated
PDF, and transcoding on retrieve (PS3.18 §8.7.3.5.2) are checked on representative instances.
Rendering does not depend on the index backend, so these tests run on the embedded set only.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid
from starlette.testclient import TestClient

from dicomhub.config import DuplicatePolicy, Settings
from dicomhub.imaging.decode import decode_frame
from dicomhub.imaging.module import Window, pixel_module
from dicomhub.imaging.pipeline import RenderOptions, render_frame
from dicomhub.imaging.source import dataset_frames, module_of
from dicomhub.services import render, retrieve
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.web.app import create_app
from tests.helpers import (
    ingest_file,
    instance_url,
    multipart_parts,
    part10_bytes,
    series_url,
    set_file_meta,
    study_url,
)
from tests.samples import CT_SMALL, MANIFEST, SAMPLES, STUDY_133, is_storable

pytestmark = pytest.mark.sqlite_only

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE_FILE = "files/pydicom-wheel/test_files/SC_rgb_jpeg_gdcm.dcm"
MULTIFRAME = "files/pydicom-wheel/test_files/rtdose.dcm"  # 15 frames
# Pixel data pydicom cannot decode but dicomhub can: a sequential JPEG with a bad scan header,
# Deflated Image Frame Compression, and an RT Dose whose header has a bad VR.
DICOMHUB_DECODES = {
    "files/pydicom-wheel/test_files/JPEG-lossy.dcm",
    "files/pydicom-data/liver_deflate.dcm",
    "files/pydicom-wheel/test_files/badVR.dcm",
}


def read(path: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(SAMPLES / path)


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def get(client: TestClient, url: str, accept: str = "image/png") -> Any:
    return client.get(url, headers={"Accept": accept})


def store(archive: Archive, *paths: str) -> None:
    for p in paths:
        ingest_file(archive, DEFAULT_TENANT, SAMPLES / p)


def test_every_sample_renders_or_is_refused_with_a_reason(
    settings: Settings, tmp_path: Path
) -> None:
    """Instance, frame and thumbnail level for every storable sample.

    Samples share SOP Instance UIDs across encodings, so each is stored over the previous one
    and rendered at once.
    """
    sweep = settings.model_copy(
        update={"data_dir": tmp_path / "sweep", "duplicate_policy": DuplicatePolicy.OVERWRITE}
    )
    archive = Archive.open(sweep)
    failures: list[str] = []
    rendered = refused = 0
    with TestClient(create_app(sweep, archive), raise_server_exceptions=False) as client:
        for entry in MANIFEST:
            if not is_storable(entry):
                continue
            props = entry["properties"]
            ingest_file(archive, DEFAULT_TENANT, SAMPLES / entry["file"])
            url = instance_url(read(entry["file"]))
            expect_ok = props.get("has_pixel_data") and (
                props.get("decodes") or entry["file"] in DICOMHUB_DECODES
            )
            resp = get(client, f"{url}/rendered")
            if not expect_ok:
                refused += 1
                reason = resp.json().get("error", "") if resp.status_code < 500 else ""
                named = any(
                    s in reason
                    for s in ("transfer syntax", "no image pixel data", "truncated", "frames")
                )
                if not (400 <= resp.status_code < 500 and named):
                    failures.append(f"{entry['file']}: {resp.status_code} {resp.text[:120]}")
                continue
            rendered += 1
            if resp.status_code != 200 or resp.headers["content-type"] != "image/png":
                failures.append(f"{entry['file']}: {resp.status_code} {resp.text[:160]}")
                continue
            if image(resp.content).size != (props["Columns"], props["Rows"]):
                failures.append(f"{entry['file']}: size {image(resp.content).size}")
            frame = get(client, f"{url}/frames/1/rendered", "image/jpeg")
            thumb = get(client, f"{url}/thumbnail", "*/*")
            if frame.status_code != 200 or frame.headers["content-type"] != "image/jpeg":
                failures.append(f"{entry['file']} frame: {frame.status_code} {frame.text[:120]}")
            if thumb.status_code != 200 or max(image(thumb.content).size) > 128:
                failures.append(f"{entry['file']} thumbnail: {thumb.status_code}")
    archive.close()
    assert not failures, "\n".join(failures)
    assert rendered >= 150 and refused >= 20


def test_pixel_module_from_stored_metadata_equals_the_header(archive: Archive) -> None:
    """A plain image's pixel module comes from the index's DICOM JSON, identical to the header's.

    Images whose rendering needs more than the plain attributes (LUT sequences, functional
    groups, palettes, overlays) keep reading the file's header.
    """
    plain = [e for e in MANIFEST if is_storable(e) and e["file"] in (CT_SMALL, MULTIFRAME)]
    with_lut = [
        e
        for e in MANIFEST
        if is_storable(e)
        and e["properties"].get("has_voi_lut_sequence")
        and e["properties"].get("transfer_syntax") == EXPLICIT_LE
    ][:1]
    assert len(plain) == 2 and with_lut
    for entry in plain + with_lut:
        store(archive, entry["file"])
        ds = read(entry["file"])
        rec = retrieve.find_instances(
            archive,
            DEFAULT_TENANT,
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
        )[0]
        header = render._header_from_metadata(archive, rec)
        if entry in with_lut:
            assert header is None, entry["file"]
            continue
        assert header is not None, entry["file"]
        reference = pixel_module(retrieve.header_dataset(archive, rec), rec.transfer_syntax_uid)
        module = pixel_module(header, rec.transfer_syntax_uid)
        assert module == reference
        assert module.frame_values == reference.frame_values


def test_study_series_rendered_and_thumbnails(client: TestClient, archive: Archive) -> None:
    store(archive, *STUDY_133)
    first = read(STUDY_133[0])
    parts = multipart_parts(
        get(client, f"{study_url(first)}/rendered", 'multipart/related; type="image/png"')
    )
    assert len(parts) == 4
    assert all(h["content-type"] == "image/png" for h, _ in parts)
    assert all(h["content-location"].endswith("/rendered") for h, _ in parts)
    series = multipart_parts(
        get(client, f"{series_url(read(STUDY_133[1]))}/rendered", "image/jpeg")
    )
    assert len(series) == 3 and all(image(d).format == "JPEG" for _, d in series)
    for url in (study_url(first), series_url(first)):
        resp = get(client, f"{url}/thumbnail", "image/jpeg")
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
        assert max(image(resp.content).size) <= 128


def test_default_media_type_is_jpeg_and_unacceptable_is_406(
    client: TestClient, archive: Archive
) -> None:
    store(archive, CT_SMALL)
    url = instance_url(read(CT_SMALL))
    assert client.get(f"{url}/rendered").headers["content-type"] == "image/jpeg"
    assert get(client, f"{url}/rendered", "image/*").headers["content-type"] == "image/jpeg"
    assert (
        get(client, f"{url}/rendered?accept=image/gif", "image/png").headers["content-type"]
        == "image/gif"
    )
    resp = get(client, f"{url}/rendered", "application/dicom")
    assert resp.status_code == 406 and "image/png" in resp.json()["error"]


def test_window_preset_viewport_quality(client: TestClient, archive: Archive) -> None:
    store(archive, CT_SMALL)
    ds = read(CT_SMALL)
    url = f"{instance_url(ds)}/rendered"
    module = module_of(ds)
    decoded = decode_frame(module, dataset_frames(ds, module)[0])
    cases = (
        ("window=40,400", Window(40, 400)),
        ("window=40,400,sigmoid", Window(40, 400, "SIGMOID")),
        ("window=40,400,linear-exact", Window(40, 400, "LINEAR_EXACT")),
        ("preset=bone", Window(400, 1800)),
    )
    for query, window in cases * 2:  # the second round comes from the encoded-image cache
        resp = get(client, f"{url}?{query}")
        assert resp.status_code == 200, resp.text
        expected = render_frame(module, decoded, 0, RenderOptions(window=window))
        assert np.array_equal(np.asarray(image(resp.content)), expected), query
    small = get(client, f"{url}?viewport=64,32")
    assert image(small.content).size == (32, 32)
    low = get(client, f"{url}?quality=10", "image/jpeg").content
    high = get(client, f"{url}?quality=95", "image/jpeg").content
    assert len(low) < len(high)
    for bad in (
        "window=40",
        "window=40,0",
        "preset=elbow",
        "viewport=0,0",
        "quality=101",
        "window=1,2&preset=lung",
        "bogus=1",
        "frames=99",
    ):
        resp = get(client, f"{url}?{bad}")
        assert resp.status_code in (400, 404), (bad, resp.status_code)
        assert resp.json()["error"]


def test_multiframe_frames_and_animated_gif(client: TestClient, archive: Archive) -> None:
    store(archive, MULTIFRAME)
    url = instance_url(read(MULTIFRAME))
    gif = get(client, f"{url}/rendered", "image/gif")
    assert gif.headers["content-type"] == "image/gif"
    assert getattr(image(gif.content), "n_frames", 1) == 15
    parts = multipart_parts(get(client, f"{url}/frames/1,3,15/rendered"))
    assert [h["content-location"].rsplit("/", 1)[-1] for h, _ in parts] == ["1", "3", "15"]
    assert len(multipart_parts(get(client, f"{url}/rendered?frames=2-4"))) == 3
    single = get(client, f"{url}/frames/3/rendered")
    assert single.headers["content-type"] == "image/png"
    assert single.content == parts[1][1]
    assert get(client, f"{url}/frames/16/rendered").status_code == 404
    thumb = get(client, f"{url}/frames/2/thumbnail")
    assert thumb.status_code == 200


def test_non_image_and_encapsulated_pdf(
    client: TestClient, archive: Archive, tmp_path: Path
) -> None:
    sr = "files/pydicom-wheel/test_files/test-SR.dcm"
    store(archive, sr)
    resp = get(client, f"{instance_url(read(sr))}/rendered")
    assert resp.status_code == 400 and "no image pixel data" in resp.json()["error"]
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"  # odd length: padded in DICOM
    ds = Dataset()
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + b"\x00"
    set_file_meta(ds)
    path = tmp_path / "doc.dcm"
    path.write_bytes(part10_bytes(ds))
    ingest_file(archive, DEFAULT_TENANT, path)
    for accept in ("application/pdf", "*/*"):
        resp = get(client, f"{instance_url(ds)}/rendered", accept)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/pdf"
        assert resp.content == pdf
    resp = get(client, f"{instance_url(ds)}/rendered", "image/png")
    assert resp.status_code == 400 and "application/pdf" in resp.json()["error"]


def test_undecodable_pixel_data_is_4xx_naming_the_transfer_syntax(
    client: TestClient, archive: Archive
) -> None:
    for path, uid in (
        ("files/pydicom-data/liver_rle.dcm", "1.2.840.10008.1.2.5"),
        (
            "files/pydicom-wheel/test_files/JPEG2000-embedded-sequence-delimiter.dcm",
            "1.2.840.10008.1.2.4.91",
        ),
    ):
        store(archive, path)
        for leaf in ("rendered", "thumbnail", "frames/1/rendered"):
            resp = get(client, f"{instance_url(read(path))}/{leaf}")
            assert resp.status_code == 400, (path, leaf, resp.text)
            assert uid in resp.json()["error"]


def test_transcoding_compressed_instance_to_explicit_le(
    client: TestClient, archive: Archive
) -> None:
    store(archive, JPEG_BASELINE_FILE)
    original = read(JPEG_BASELINE_FILE)
    url = instance_url(original)
    expected = original.pixel_array
    single = get(client, url, f"application/dicom; transfer-syntax={EXPLICIT_LE}")
    assert single.status_code == 200, single.text
    assert f"transfer-syntax={EXPLICIT_LE}" in single.headers["content-type"]
    multi = get(
        client, url, f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    )
    ((headers, body),) = multipart_parts(multi)
    assert f"transfer-syntax={EXPLICIT_LE}" in headers["content-type"]
    for data in (single.content, body):
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPInstanceUID == original.SOPInstanceUID
        assert np.array_equal(ds.pixel_array, expected)
    # Other targets remain 406.
    assert (
        get(client, url, "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80").status_code
        == 406
    )
