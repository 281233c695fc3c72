"""Frames of a data set read from a file (the CLI and tests; the archive uses indexed offsets)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dicomhub.errors import NotRenderable
from dicomhub.imaging.module import PIXEL_KEYWORDS, PixelModule, pixel_module

BIG_ENDIAN = "1.2.840.10008.1.2.2"

log = logging.getLogger(__name__)


def transfer_syntax_of(ds: Any) -> str:
    """The data set's transfer syntax (File Meta, else how pydicom read it)."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return str(ts)
    if not getattr(ds, "is_little_endian", True):
        return BIG_ENDIAN
    return "1.2.840.10008.1.2" if getattr(ds, "is_implicit_VR", False) else "1.2.840.10008.1.2.1"


def module_of(ds: Any) -> PixelModule:
    """The pixel module of a fully read data set.

    Raises:
        NotRenderable: No image pixel data.
    """
    keyword = next((kw for kw in PIXEL_KEYWORDS if kw in ds), None)
    if keyword is None:
        sop = str(ds.get("SOPClassUID", "") or "unknown")
        raise NotRenderable(f"the instance has no image pixel data (SOP Class {sop})")
    return pixel_module(ds, transfer_syntax_of(ds), keyword)


def big_to_little(data: bytes, bits_allocated: int, vr: str) -> bytes:
    """Native big-endian pixel data in little-endian order (PS3.5 §7.3, §8.1.1).

    Values wider than a byte are swapped; 8-bit samples in an OW value are stored in swapped
    16-bit words and are swapped back pairwise.
    """
    width = bits_allocated // 8 if bits_allocated in (16, 32, 64) else 0
    if not width and vr == "OW" and bits_allocated == 8:
        width = 2
    if not width:
        return data
    usable = len(data) - len(data) % width
    swapped = np.frombuffer(data[:usable], dtype=f">u{width}").astype(f"<u{width}").tobytes()
    return swapped + data[usable:]


def read_dataset(path: str) -> Any:
    """Read a DICOM file, recovering raw data sets that start with stray bytes.

    A file without preamble and File Meta is tried as read, then from the next few offsets
    (DCMTK's ``-f -te`` recovery for truncated heads).
    """
    import io
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        if any(kw in ds for kw in PIXEL_KEYWORDS) or "TransferSyntaxUID" in ds.file_meta:
            return ds
        with open(path, "rb") as fh:
            head = fh.read()
        for skip in range(1, 8):
            try:
                other = pydicom.dcmread(io.BytesIO(head[skip:]), force=True)
            except Exception:  # not a data set from this offset
                log.debug("no data set at offset %d", skip)
                continue
            if any(kw in other for kw in PIXEL_KEYWORDS):
                return other
    return ds


def dataset_frames(ds: Any, module: PixelModule) -> list[bytes]:
    """Every frame's bytes: codestreams, or native frames in little-endian order (PS3.5 §8.2).

    Raises:
        NotRenderable: Encapsulated frames cannot be located, or native data is too short.
    """
    data: bytes = ds[module.pixel_keyword].value
    n = module.number_of_frames
    if module.encapsulated:
        from pydicom.encaps import generate_frames

        try:
            return [bytes(f) for f in generate_frames(data, number_of_frames=n)]
        except Exception as exc:  # malformed item structure
            raise NotRenderable(f"encapsulated frames cannot be located: {exc}") from exc
    if module.transfer_syntax == BIG_ENDIAN:
        data = big_to_little(data, module.bits_allocated, ds[module.pixel_keyword].VR)
    spp = module.samples_per_pixel
    if module.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and spp == 3:
        spp = 2
    frame_bits = module.rows * module.columns * spp * module.bits_allocated
    if frame_bits % 8 == 0:
        size = frame_bits // 8
        return [data[i * size : (i + 1) * size] for i in range(n)]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return [
        np.packbits(bits[i * frame_bits : (i + 1) * frame_bits], bitorder="little").tobytes()
        for i in range(n)
    ]
