"""Unit tests of the pixel pipeline's small steps (PS3.3 C.11.2.1.2, PS3.18 §8.3.5)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from dicomhub.config import DEFAULT_PRESETS
from dicomhub.errors import InvalidInput
from dicomhub.imaging import lut
from dicomhub.imaging.cache import SizedLRU
from dicomhub.imaging.decode import Decoded
from dicomhub.imaging.encode import (
    Region,
    RegionOutside,
    crop,
    encode_png,
    fit_size,
    parse_quality,
    parse_viewport,
    parse_viewport_region,
)
from dicomhub.imaging.module import Window, pixel_module
from dicomhub.imaging.pipeline import (
    RenderOptions,
    VoiMode,
    _gray,
    _through_lut,
    parse_window,
    preset_window,
    render_frame,
)
from dicomhub.services.render import parse_frame_ranges


def test_linear_window_follows_c11_2_1_2_1() -> None:
    values = np.array([-1000.0, -160.0, 40.0, 239.5, 240.0, 3000.0])
    out = lut.window(values, Window(40.0, 400.0))
    assert out[0] == 0.0 and out[-1] == 255.0
    assert out[1] == 0.0  # x <= c - 0.5 - (w-1)/2
    assert out[2] == pytest.approx(((40 - 39.5) / 399 + 0.5) * 255)
    assert out[4] == 255.0


def test_linear_exact_and_sigmoid() -> None:
    values = np.array([-160.0, 40.0, 240.0])
    exact = lut.window(values, Window(40.0, 400.0, "LINEAR_EXACT"))
    assert exact.tolist() == [0.0, 127.5, 255.0]
    sigmoid = lut.window(values, Window(40.0, 400.0, "SIGMOID"))
    assert sigmoid[1] == pytest.approx(127.5)
    assert sigmoid[0] == pytest.approx(255 / (1 + np.exp(2.0)))  # C.11.2.1.3.1
    assert sigmoid[2] == pytest.approx(255 / (1 + np.exp(-2.0)))


def test_min_max_window_spans_the_values() -> None:
    values = np.array([[-5.0, 10.0], [20.0, 95.0]])
    out = lut.window(values, lut.min_max_window(values))
    assert out.min() == 0.0 and out.max() == 255.0
    flat = np.full((2, 2), 7.0)
    assert np.isfinite(lut.window(flat, lut.min_max_window(flat))).all()


def test_parse_window_and_presets() -> None:
    assert parse_window("40,400") == Window(40.0, 400.0, "LINEAR")
    assert parse_window("40,400,linear-exact").function == "LINEAR_EXACT"
    assert parse_window("-600, 1500, SIGMOID").function == "SIGMOID"
    for bad in ("40", "40,0", "a,b", "40,400,cubic", "1,2,3,4", "nan,5"):
        with pytest.raises(InvalidInput):
            parse_window(bad)
    assert preset_window("Lung", DEFAULT_PRESETS) == Window(-600.0, 1500.0)
    with pytest.raises(InvalidInput, match="known: abdomen"):
        preset_window("elbow", DEFAULT_PRESETS)


def test_viewport_quality_and_fit() -> None:
    assert parse_viewport("256,128") == (256, 128)
    assert parse_viewport("512x512") == (512, 512)
    assert parse_viewport(",64") == (0, 64)
    for bad in ("", "0,0", "a,b", "1,2,3", "99999,1"):
        with pytest.raises(InvalidInput):
            parse_viewport(bad)
    assert parse_quality("75") == 75
    with pytest.raises(InvalidInput):
        parse_quality("0")
    assert fit_size(512, 256, (128, 128)) == (64, 128)
    assert fit_size(100, 200, (0, 50)) == (100, 50)


def test_viewport_region_parse_and_crop() -> None:
    assert parse_viewport_region("256,128") == ((256, 128), None)
    assert parse_viewport_region("64,64,1,2,-3,4") == ((64, 64), Region(1, 2, -3, 4))
    assert parse_viewport_region("64,64,,,5") == ((64, 64), Region(0, 0, 5, None))
    assert parse_viewport_region("64,64,,,,") == ((64, 64), None)
    for bad in ("64,64,-1", "64,64,0,0,0", "64,64,0,0,1.5", "64,64,1,1,1,1,1", ",,1,1,1,1"):
        with pytest.raises(InvalidInput):
            parse_viewport_region(bad)
    frame = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert crop(frame, Region(1, 1, 2, 5)).tolist() == [[5, 6], [9, 10]]  # clipped below
    assert crop(frame, Region(2, 0, -2, -2)).tolist() == [[7, 6], [3, 2]]  # both flips
    assert crop(frame, None) is frame
    with pytest.raises(RegionOutside, match="outside the 4x3 image"):
        crop(frame, Region(4, 0))


def test_frame_ranges() -> None:
    assert parse_frame_ranges(None, 5, [1]) == [1]
    assert parse_frame_ranges("all", 3, [1]) == [1, 2, 3]
    assert parse_frame_ranges("1,3-5", 9, [1]) == [1, 3, 4, 5]
    for bad in ("0", "2-1", "1,x", "10", "-3"):
        with pytest.raises(InvalidInput):
            parse_frame_ranges(bad, 9, [1])


def test_lru_is_bounded_by_bytes() -> None:
    cache: SizedLRU[str] = SizedLRU(100)
    for i in range(10):
        cache.put(i, f"v{i}", 30)
    assert cache.size <= 100 and len(cache) == 3
    assert cache.get(9) == "v9" and cache.get(0) is None
    cache.put("big", "x", 101)  # larger than the whole cache: not kept
    assert cache.get("big") is None
    cache.get(7)
    cache.put(10, "v10", 30)
    assert cache.get(7) == "v7" and cache.get(8) is None


@pytest.mark.parametrize(
    "shape", [(1, 1), (5, 7), (64, 48), (1, 1, 3), (9, 4, 3), (33, 65, 3)], ids=str
)
def test_png_encoder_is_lossless(shape: tuple[int, ...]) -> None:
    """Our PNG (ISO 15948; Up or Sub filter) decodes to the very same samples."""
    frame = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    for view in (frame, frame[::-1]):  # also a non-contiguous view
        image = Image.open(io.BytesIO(encode_png(view)))
        assert image.mode == ("L" if view.ndim == 2 else "RGB")
        assert np.array_equal(np.asarray(image), view)
    with pytest.raises(ValueError):
        encode_png(frame.astype(np.uint16))


def _ct_module(**extra: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored = 8, 8, 16, 12
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = "1.5", "-1024"
    ds.WindowCenter, ds.WindowWidth = ["40", "-600"], ["400", "1500"]
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.int8])
@pytest.mark.parametrize(
    "options",
    [
        RenderOptions(),
        RenderOptions(window=Window(40.0, 400.0)),
        RenderOptions(window=Window(-3.0, 0.5)),
        RenderOptions(window=Window(40.0, 400.0, "SIGMOID")),
        RenderOptions(window=Window(40.0, 400.0, "LINEAR_EXACT")),
    ],
    ids=repr,
)
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_lut_chain_equals_the_direct_chain(
    dtype: type[np.integer[Any]], options: RenderOptions, photometric: str
) -> None:
    """The cached display LUT gives exactly what modality LUT -> window -> inversion gives."""
    module = pixel_module(_ct_module(), "1.2.840.10008.1.2.1")
    info = np.iinfo(dtype)
    arr = np.random.default_rng(3).integers(
        info.min, info.max, (40, 30), dtype=dtype, endpoint=True
    )
    fast = _through_lut(module, arr, 0, options, photometric)
    assert fast is not None
    assert np.array_equal(fast, _gray(module, arr, 0, options, photometric))
    rendered = render_frame(module, Decoded(arr, photometric), 0, options)
    assert np.array_equal(rendered, fast)


def test_lut_chain_is_not_used_where_the_frame_decides() -> None:
    """Min/max windows depend on the frame; float data has no finite domain."""
    module = pixel_module(_ct_module(), "1.2.840.10008.1.2.1")
    arr = np.arange(64, dtype=np.uint16).reshape(8, 8)
    assert _through_lut(module, arr, 0, RenderOptions(voi=VoiMode.MIN_MAX), "MONOCHROME2") is None
    assert _through_lut(module, arr.astype(np.float32), 0, RenderOptions(), "MONOCHROME2") is None
    no_window = pixel_module(_ct_module(WindowCenter=None, WindowWidth=None), "1.2.840.10008.1.2.1")
    assert _through_lut(no_window, arr, 0, RenderOptions(), "MONOCHROME2") is None
