"""Decode one frame's bytes into a numpy array (PS3.5 §8.2, §A.4; PS3.3 C.7.6.3).

Every transfer syntax that pydicom's decoder plugins handle (pylibjpeg-libjpeg, -openjpeg, -rle,
python-gdcm when installed, pydicom's own RLE/native decoders) is supported: JPEG baseline,
extended and lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE, and native data (little/big endian,
deflated: the frame bytes handed in are already inflated and in little-endian order).

The result keeps stored values: signed data is sign-extended, unused high bits (Bits Stored below
Bits Allocated) are masked, planar configuration is undone, YBR_FULL / YBR_FULL_422 are
converted to RGB, and a JPEG decoder's own YCbCr -> RGB conversion (YBR_ICT/RCT, baseline JPEG)
is reported back as ``RGB``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomhub.errors import NotRenderable
from dicomhub.imaging.module import PixelModule

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_IMAGE_FRAME = "1.2.840.10008.1.2.8.1"  # PS3.5 §A.4.12 (2024): each frame deflated


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded frame and the photometric interpretation of its values."""

    array: np.ndarray[Any, Any]
    photometric: str


def syntax_name(uid: str) -> str:
    """``UID (name)`` of a transfer syntax, for error reasons."""
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


def _decoder(uid: str) -> Any:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return get_decoder(uid)
    except NotImplementedError as exc:
        raise NotRenderable(
            f"pixel data in transfer syntax {syntax_name(uid)} cannot be decoded"
        ) from exc


def can_decode(uid: str) -> bool:
    """Whether frames in transfer syntax ``uid`` can be decoded here."""
    from pydicom.pixels.decoders.base import get_decoder

    if uid == DEFLATED_IMAGE_FRAME:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def decode_frame(module: PixelModule, data: bytes) -> Decoded:
    """Decode one frame (native bytes in little-endian order, or one codestream).

    Args:
        module: The instance's pixel module.
        data: The frame as returned by retrieval (native: its bytes; encapsulated: its
            fragments concatenated).

    Returns:
        The frame, shaped ``(rows, columns)`` or ``(rows, columns, 3)``.

    Raises:
        NotRenderable: No decoder for the transfer syntax, or the data cannot be decoded.
    """
    from pydicom.encaps import encapsulate

    if module.transfer_syntax == DEFLATED_IMAGE_FRAME:
        data = _inflate(data)
    if module.encapsulated and module.transfer_syntax != DEFLATED_IMAGE_FRAME:
        decoder = _decoder(module.transfer_syntax)
        if not decoder.is_available:
            raise NotRenderable(
                f"no decoder plugin installed for transfer syntax "
                f"{syntax_name(module.transfer_syntax)}"
            )
        src: bytes = encapsulate([data])
    else:
        decoder = _decoder(EXPLICIT_LE)
        src = data
        expected = _native_length(module)
        if len(src) < expected:
            raise NotRenderable(
                f"pixel data is truncated: frame has {len(src)} of {expected} bytes "
                f"(transfer syntax {syntax_name(module.transfer_syntax)})"
            )
    try:
        arr, meta = _as_array(decoder, src, module)
    except Exception as exc:  # every plugin failure mode is "cannot decode this frame"
        repaired = _repair_sequential_jpeg(data) if module.transfer_syntax in _SEQUENTIAL else None
        if repaired is not None:
            try:
                arr, meta = _as_array(decoder, encapsulate([repaired]), module)
            except Exception:  # the repair did not help: report the original failure
                repaired = None
        if repaired is None:
            raise _undecodable(module, exc) from exc
    photometric = str(meta.get("photometric_interpretation", module.photometric))
    arr = _mask_unused_bits(arr, module)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Decoded(arr, photometric.upper())


_SEQUENTIAL = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})


def _as_array(decoder: Any, src: bytes, module: PixelModule) -> tuple[Any, dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr, meta = decoder.as_array(src, index=0, **module.decode_options())
    return arr, meta


def _undecodable(module: PixelModule, exc: Exception) -> NotRenderable:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = " ".join(lines)[:300] if lines else type(exc).__name__
    return NotRenderable(
        f"pixel data in transfer syntax {syntax_name(module.transfer_syntax)} "
        f"could not be decoded: {detail}"
    )


def _repair_sequential_jpeg(data: bytes) -> bytes | None:
    """Fix Start of Scan spectral selection of a sequential DCT JPEG (ISO 10918-1 B.2.3).

    Some encoders (e.g. the NEMA WG04 ``NM1_JPLY`` family) write Ss/Se/Ah/Al other than
    0/63/0/0 in a sequential scan, which strict decoders reject. Returns the patched codestream,
    or None when there is nothing to patch.
    """
    buf = bytearray(data)
    pos, patched = 2, False
    while pos + 4 <= len(buf) and buf[pos] == 0xFF:
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            ns = buf[pos + 4]
            ss = pos + 5 + 2 * ns
            if ss + 3 > len(buf):
                return None
            if (buf[ss], buf[ss + 1], buf[ss + 2]) != (0, 63, 0):
                buf[ss], buf[ss + 1], buf[ss + 2] = 0, 63, 0
                patched = True
            break
        pos += 2 + length
    return bytes(buf) if patched else None


def _inflate(data: bytes) -> bytes:
    """A Deflated Image Frame Compression frame as native bytes (raw DEFLATE, RFC 1951)."""
    import zlib

    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    except zlib.error as exc:
        raise NotRenderable(
            f"pixel data in transfer syntax {syntax_name(DEFLATED_IMAGE_FRAME)} could not be "
            f"inflated: {exc}"
        ) from exc


def _native_length(module: PixelModule) -> int:
    spp = module.samples_per_pixel
    if module.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and spp == 3:
        spp = 2
    bits = module.rows * module.columns * spp * module.bits_allocated
    return (bits + 7) // 8


def _mask_unused_bits(arr: np.ndarray[Any, Any], module: PixelModule) -> np.ndarray[Any, Any]:
    """Clear bits above Bits Stored of unsigned integer data (PS3.5 §8.1.1)."""
    if arr.dtype.kind != "u":
        return arr
    bits = arr.dtype.itemsize * 8
    if 0 < module.bits_stored < bits and module.bits_allocated > 1:
        masked: np.ndarray[Any, Any] = arr & np.asarray((1 << module.bits_stored) - 1, arr.dtype)
        return masked
    return arr
