"""Unit tests of the pixel pipeline's small steps (PS3.3 C.11.2.1.2, PS3.18 §8.3.5)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomhub.errors import InvalidInput
from dicomhub.imaging import lut
from dicomhub.imaging.cache import SizedLRU
from dicomhub.imaging.encode import (
    Region,
    RegionOutside,
    crop,
    fit_size,
    parse_quality,
    parse_viewport,
    parse_viewport_region,
)
from dicomhub.imaging.module import Window
from dicomhub.imaging.pipeline import DEFAULT_PRESETS, parse_window, preset_window
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
