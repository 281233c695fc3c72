"""Rendered viewport regions and ZIPs of rendered images, checked pixel by pixel.

``viewport=vw,vh,sx,sy,sw,sh`` (PS3.18 §8.3.5.1.3): crops, flips, clipping and the 400s for
regions and values that make no sense; ``Accept: application/zip`` on study, series, instance
and frames rendered: one decodable image per renderable instance (or frame), ordinal entry
names without UIDs, instances without pixel data left out as in the multipart response.

The images are synthetic 8-bit RGB (rendered unchanged), each pixel telling its own position
(red = 4 x column, green = 5 x row, blue = quadrant), so a crop or flip is compared exactly.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.web.app import create_app
from tests.helpers import (
    ROOT,
    ingest_file,
    multipart_parts,
    part10_bytes,
    set_file_meta,
)

Array = np.ndarray[Any, Any]
ROWS, COLS = 48, 64
PNG_ZIP = 'application/zip; type="image/png"'


def quadrants(rows: int = ROWS, cols: int = COLS, salt: int = 0) -> Array:
    """RGB ``uint8``: red 4 x column, green 5 x row, blue by quadrant (+ ``salt``)."""
    y, x = np.mgrid[0:rows, 0:cols]
    blue = np.select(
        [(y < rows // 2) & (x < cols // 2), y < rows // 2, x < cols // 2], [0, 80, 160], 240
    )
    return np.stack([x * 4 % 256, y * 5 % 256, (blue + salt) % 256], axis=-1).astype(np.uint8)


@dataclass
class Study:
    """The synthetic study: series 1 = image, SR, image; series 2 = one 3-frame image."""

    uid: str
    series: list[str]
    first: Dataset
    sr: Dataset
    third: Dataset
    multi: Dataset
    pixels: dict[str, Array]  # SOP Instance UID -> (frames,) rows, cols, 3

    def url(self, ds: Dataset) -> str:
        return f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}" + (
            f"/instances/{ds.SOPInstanceUID}"
        )

    def uids(self) -> list[str]:
        sops = [d.SOPInstanceUID for d in (self.first, self.sr, self.third, self.multi)]
        return [self.uid, *self.series, *sops]


def _base(sop_class: str, study: str, series: str, number: int, series_number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    set_file_meta(ds)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "Viewport^Test", "VP-1"
    ds.SeriesNumber, ds.InstanceNumber = series_number, number
    return ds


def _rgb(ds: Dataset, frames: Array) -> Dataset:
    ds.Modality = "OT"
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = frames.tobytes()
    return ds


def store(archive: Archive, tmp_path: Path, *datasets: Dataset) -> None:
    for ds in datasets:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part10_bytes(ds))
        ingest_file(archive, DEFAULT_TENANT, path)


@pytest.fixture
def study(archive: Archive, tmp_path: Path) -> Study:
    uid, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    first_px, third_px = quadrants()[None], quadrants(salt=7)[None]
    multi_px = np.stack([quadrants(16, 16, salt=k * 3) for k in range(3)])
    first = _rgb(_base(SecondaryCaptureImageStorage, uid, s1, 1, 1), first_px)
    sr = _base(BasicTextSRStorage, uid, s1, 2, 1)
    sr.Modality = "SR"
    third = _rgb(_base(SecondaryCaptureImageStorage, uid, s1, 3, 1), third_px)
    multi = _rgb(_base(MultiFrameTrueColorSecondaryCaptureImageStorage, uid, s2, 1, 2), multi_px)
    store(archive, tmp_path, first, sr, third, multi)
    pixels = {
        first.SOPInstanceUID: first_px,
        third.SOPInstanceUID: third_px,
        multi.SOPInstanceUID: multi_px,
    }
    return Study(uid, [s1, s2], first, sr, third, multi, pixels)


def png(data: bytes) -> Array:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def rendered(client: TestClient, url: str, viewport: str, accept: str = "image/png") -> Any:
    return client.get(url, params={"viewport": viewport}, headers={"Accept": accept})


def entries(resp: Any) -> dict[str, bytes]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


# ---------------------------------------------------------------------------------------------
# viewport regions


def test_viewport_region_crops_flips_and_clips(client: TestClient, study: Study) -> None:
    src = study.pixels[study.first.SOPInstanceUID][0]
    url = f"{study.url(study.first)}/rendered"
    cases = {
        "64,48": src,  # the whole image, no scaling
        "16,12,8,4,16,12": src[4:16, 8:24],
        "32,24,,,32,24": src[:24, :32],  # sx, sy empty: 0 (top-left quadrant)
        "32,24,32,24": src[24:, 32:],  # sw, sh left off: to the edges (bottom-right)
        "64,48,0,0,-64,48": src[:, ::-1],  # negative sw: flipped horizontally
        "64,48,0,0,64,-48": src[::-1],  # negative sh: flipped vertically
        "64,48,,,-64,-48": src[::-1, ::-1],
        "16,12,8,4,-16,12": src[4:16, 8:24][:, ::-1],  # the same region, flipped
        "16,8,48,40,32,32": src[40:48, 48:64],  # clipped to the image
        "16,8,48,40,,": src[40:, 48:],
    }
    for viewport, expected in cases.items():
        resp = rendered(client, url, viewport)
        assert resp.status_code == 200, (viewport, resp.text)
        assert np.array_equal(png(resp.content), expected), viewport
    top_left = png(rendered(client, url, "64,64,0,0,32,24").content)
    assert top_left.shape == (48, 64, 3)  # 32 x 24 fitted into 64 x 64: scaled by 2
    assert int(top_left[..., 2].max()) <= 8  # only the blue-0 quadrant (resampling aside)
    upscaled = np.repeat(np.repeat(src[:24, :32].astype(int), 2, axis=0), 2, axis=1)
    assert float(np.abs(top_left.astype(int) - upscaled).mean()) < 4
    one_side = png(rendered(client, url, ",12,0,0,16,24").content)
    assert one_side.shape == (12, 8, 3)  # height only: aspect ratio of the region kept


def test_viewport_region_at_frame_thumbnail_and_collection_levels(
    client: TestClient, study: Study
) -> None:
    frames = study.pixels[study.multi.SOPInstanceUID]
    multi = study.url(study.multi)
    resp = rendered(client, f"{multi}/frames/2/rendered", "8,8,4,4,8,-8")
    assert np.array_equal(png(resp.content), frames[1][4:12, 4:12][::-1])
    many = multipart_parts(rendered(client, f"{multi}/frames/1,3/rendered", "8,8,0,0,-8,8"))
    assert [png(d).tolist() for _, d in many] == [
        frames[0][:8, :8][:, ::-1].tolist(),
        frames[2][:8, :8][:, ::-1].tolist(),
    ]
    thumb = rendered(client, f"{study.url(study.first)}/thumbnail", "10,10,5,5,10,10")
    src = study.pixels[study.first.SOPInstanceUID][0]
    assert np.array_equal(png(thumb.content), src[5:15, 5:15])
    series = f"{ROOT}/studies/{study.uid}/series/{study.series[0]}/rendered"
    parts = multipart_parts(
        rendered(client, series, "4,4,60,44", 'multipart/related; type="image/png"')
    )
    third = study.pixels[study.third.SOPInstanceUID][0]
    assert [png(d).tolist() for _, d in parts] == [src[44:, 60:].tolist(), third[44:, 60:].tolist()]
    # The 16 x 16 frames hold nothing at (20, 20): that instance is left out, the others kept.
    study_parts = multipart_parts(
        rendered(client, f"{ROOT}/studies/{study.uid}/rendered", "4,4,20,20,4,4")
    )
    assert len(study_parts) == 2


@pytest.mark.parametrize(
    ("viewport", "reason"),
    [
        ("10,10,64,0,10,10", "outside"),  # starts right of the last column
        ("10,10,0,48", "outside"),  # starts below the last row
        ("10,10,0,0,0,10", "must not be 0"),
        ("10,10,0,0,10,-0", "must not be 0"),
        ("10,10,a,0,5,5", "sx"),
        ("10,10,1.5,0,5,5", "sx"),
        ("10,10,-1,0,5,5", "sx"),  # offsets are not negative
        ("10,10,0,+1,5,5", "sy"),
        ("10,10,0,0,5e2,5", "sw"),
        ("10,10,0,0,5,99999", "sh"),
        ("10,10,0,0,5,1000000", "sh"),
        ("10,10,0,0,5,5,5", "vw,vh,sx,sy,sw,sh"),
        (",,0,0,5,5", "width or a height"),
        ("10x10,0,0,5,5", "width and height"),
        ("16385,10,0,0,5,5", "width and height"),
        ("16384,16384,0,0,1,1", "at most"),  # a 268 Mpixel upscale is refused
        ("1" * 81, "too long"),
    ],
)
def test_bad_viewport_is_400_with_a_reason(
    client: TestClient, study: Study, viewport: str, reason: str
) -> None:
    for url in (
        f"{study.url(study.first)}/rendered",
        f"{study.url(study.first)}/frames/1/rendered",
        f"{study.url(study.first)}/thumbnail",
        f"{ROOT}/studies/{study.uid}/series/{study.series[0]}/rendered",
    ):
        resp = rendered(client, url, viewport)
        assert resp.status_code == 400, (url, viewport, resp.status_code, resp.text)
        assert reason in resp.json()["error"], (url, resp.json())


# ---------------------------------------------------------------------------------------------
# ZIP of rendered images


def _no_uids(names: list[str], study: Study) -> None:
    for name in names:
        assert re.fullmatch(r"(series-\d{3}/)?(image|frame)(-\d{4})*(-frame-\d{4})?\.\w+", name)
        assert not any(uid in name for uid in study.uids())
        assert "Viewport" not in name and "VP-1" not in name


def test_study_and_series_zip(client: TestClient, study: Study) -> None:
    resp = client.get(f"{ROOT}/studies/{study.uid}/rendered", headers={"Accept": PNG_ZIP})
    files = entries(resp)
    assert resp.headers["content-disposition"] == 'attachment; filename="study.zip"'
    # The SR (2nd of series 1) is left out, as in the multipart response; ordinals are kept.
    assert sorted(files) == [
        "series-001/image-0001.png",
        "series-001/image-0003.png",
        "series-002/image-0001-frame-0001.png",
    ]
    _no_uids(list(files), study)
    px = study.pixels
    assert np.array_equal(
        png(files["series-001/image-0001.png"]), px[study.first.SOPInstanceUID][0]
    )
    assert np.array_equal(
        png(files["series-001/image-0003.png"]), px[study.third.SOPInstanceUID][0]
    )
    assert np.array_equal(
        png(files["series-002/image-0001-frame-0001.png"]), px[study.multi.SOPInstanceUID][0]
    )
    multipart = client.get(
        f"{ROOT}/studies/{study.uid}/rendered",
        headers={"Accept": "multipart/related; type=image/png"},
    )
    assert len(multipart_parts(multipart)) == len(files)

    every = entries(
        client.get(f"{ROOT}/studies/{study.uid}/rendered?frames=all", headers={"Accept": PNG_ZIP})
    )
    frames = sorted(n for n in every if n.startswith("series-002/"))
    assert frames == [f"series-002/image-0001-frame-000{k}.png" for k in (1, 2, 3)]
    for k, name in enumerate(frames):
        assert np.array_equal(png(every[name]), px[study.multi.SOPInstanceUID][k])

    series = client.get(
        f"{ROOT}/studies/{study.uid}/series/{study.series[0]}/rendered?viewport=8,8,0,0,-8,-8",
        headers={"Accept": PNG_ZIP},
    )
    files = entries(series)
    assert series.headers["content-disposition"] == 'attachment; filename="series.zip"'
    assert sorted(files) == ["image-0001.png", "image-0003.png"]
    assert np.array_equal(
        png(files["image-0003.png"]), px[study.third.SOPInstanceUID][0][:8, :8][::-1, ::-1]
    )


def test_instance_and_frames_zip(client: TestClient, study: Study) -> None:
    url = study.url(study.multi)
    frames = study.pixels[study.multi.SOPInstanceUID]
    resp = client.get(f"{url}/rendered", headers={"Accept": PNG_ZIP})
    files = entries(resp)
    assert resp.headers["content-disposition"] == 'attachment; filename="instance.zip"'
    assert sorted(files) == ["frame-0001.png", "frame-0002.png", "frame-0003.png"]  # every frame
    for k in range(3):
        assert np.array_equal(png(files[f"frame-000{k + 1}.png"]), frames[k])
    some = entries(client.get(f"{url}/rendered?frames=2-3", headers={"Accept": PNG_ZIP}))
    assert sorted(some) == ["frame-0002.png", "frame-0003.png"]
    listed = entries(client.get(f"{url}/frames/3,1/rendered", headers={"Accept": PNG_ZIP}))
    assert np.array_equal(png(listed["frame-0003.png"]), frames[2])
    assert sorted(listed) == ["frame-0001.png", "frame-0003.png"]
    # Default image type JPEG; GIF: one animated image per instance.
    jpeg = entries(client.get(f"{url}/rendered", headers={"Accept": "application/zip"}))
    assert sorted(jpeg) == ["frame-0001.jpg", "frame-0002.jpg", "frame-0003.jpg"]
    decoded = Image.open(io.BytesIO(jpeg["frame-0002.jpg"]))
    assert decoded.format == "JPEG"
    assert float(np.abs(np.asarray(decoded).astype(int) - frames[1]).mean()) < 8
    gif = entries(
        client.get(f"{url}/rendered", headers={"Accept": 'application/zip; type="image/gif"'})
    )
    assert list(gif) == ["image.gif"]
    assert getattr(Image.open(io.BytesIO(gif["image.gif"])), "n_frames", 1) == 3
    # The accept query parameter works as the header does.
    by_query = client.get(f"{url}/rendered?accept=application/zip")
    assert sorted(entries(by_query)) == sorted(jpeg)


def test_zip_refusals(client: TestClient, study: Study) -> None:
    sr = client.get(f"{study.url(study.sr)}/rendered", headers={"Accept": PNG_ZIP})
    assert sr.status_code == 400 and "no image pixel data" in sr.json()["error"]
    outside = client.get(
        f"{ROOT}/studies/{study.uid}/rendered?viewport=4,4,100,100,4,4", headers={"Accept": PNG_ZIP}
    )
    assert outside.status_code == 400 and "outside" in outside.json()["error"]
    for url, accept in (
        (f"{study.url(study.first)}/thumbnail", PNG_ZIP),  # a thumbnail is one image
        (f"{ROOT}/studies/{study.uid}/thumbnail", "application/zip"),
        (f"{ROOT}/studies/{study.uid}/rendered", 'application/zip; type="image/bmp"'),
    ):
        resp = client.get(url, headers={"Accept": accept})
        assert resp.status_code == 406, (url, accept, resp.text)
        assert resp.json()["error"]
    assert (
        client.get(
            f"{study.url(study.multi)}/rendered?frames=4", headers={"Accept": PNG_ZIP}
        ).status_code
        == 400
    )


def test_zip_is_bounded_by_max_frames_per_request(
    settings: Settings, archive: Archive, study: Study
) -> None:
    small = settings.model_copy(update={"max_frames_per_request": 2})
    bounded = Archive.open(small)  # the same index and blobs, a smaller bound
    with TestClient(create_app(small, bounded), raise_server_exceptions=False) as client:
        resp = client.get(f"{ROOT}/studies/{study.uid}/rendered", headers={"Accept": PNG_ZIP})
        assert resp.status_code == 400 and "at most 2" in resp.json()["error"]
        multi = client.get(f"{study.url(study.multi)}/rendered", headers={"Accept": PNG_ZIP})
        assert multi.status_code == 400 and "at most 2" in multi.json()["error"]
        two = client.get(
            f"{study.url(study.multi)}/rendered?frames=1-2", headers={"Accept": PNG_ZIP}
        )
        assert sorted(entries(two)) == ["frame-0001.png", "frame-0002.png"]
    bounded.close()


def test_frames_in_a_collection(client: TestClient, study: Study) -> None:
    """``frames=`` in a study: instances without those frames are left out (multipart, ZIP)."""
    url = f"{ROOT}/studies/{study.uid}/rendered?frames=2-3"
    parts = multipart_parts(
        client.get(url, headers={"Accept": "multipart/related; type=image/png"})
    )
    multi = study.url(study.multi)
    assert [h["content-location"] for h, _ in parts] == [
        f"http://testserver{multi}/frames/2/rendered",
        f"http://testserver{multi}/frames/3/rendered",
    ]
    frames = study.pixels[study.multi.SOPInstanceUID]
    assert [png(d).tolist() for _, d in parts] == [frames[1].tolist(), frames[2].tolist()]
    files = entries(client.get(url, headers={"Accept": PNG_ZIP}))
    assert sorted(files) == [
        "series-002/image-0001-frame-0002.png",
        "series-002/image-0001-frame-0003.png",
    ]
    for bad in ("frames=0", "frames=3-2", "frames=x", "frames=1-999999999"):
        resp = client.get(f"{ROOT}/studies/{study.uid}/rendered?{bad}", headers={"Accept": PNG_ZIP})
        assert resp.status_code == 400 and resp.json()["error"], bad
    none = client.get(f"{ROOT}/studies/{study.uid}/rendered?frames=9", headers={"Accept": PNG_ZIP})
    assert none.status_code == 400 and "frames 9 outside" in none.json()["error"]
