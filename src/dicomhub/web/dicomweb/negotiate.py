"""Content negotiation for WADO-RS (PS3.18 §8.7.3, Tables 8.7.3-2 to 8.7.3-5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dicomhub.errors import NotAcceptable
from dicomhub.web.media import MediaRange

DICOM = "application/dicom"
OCTET = "application/octet-stream"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

# Media type of an encapsulated frame by Transfer Syntax UID (PS3.18 Table 8.7.3-5).
FRAME_MEDIA: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}


@dataclass(frozen=True, slots=True)
class Choice:
    """The representation chosen for a response."""

    multipart: bool
    media_type: str  # of the body (single part) or of each part
    transfer_syntax: str | None  # label for the part's transfer-syntax parameter
    transcode: bool = False  # decode stored instances into ``transfer_syntax``


def _multipart_type(r: MediaRange, default: str) -> str | None:
    """The part media type a ``multipart/related`` (or wildcard) range asks for."""
    if r.type == "*" or (r.type == "multipart" and r.subtype in ("*", "related")):
        return r.params.get("type", default).lower()
    return None


def _ts_ok(r: MediaRange, stored: set[str], native_equivalent: set[str] | None = None) -> bool:
    """Whether every instance can be sent in the transfer syntax the range asks for."""
    ts = r.params.get("transfer-syntax")
    if ts is None or ts == "*":
        return True
    if native_equivalent is not None:
        return ts in native_equivalent
    return stored == {ts}


def choose_instances(
    accept: list[MediaRange],
    syntaxes: set[str],
    single: bool,
    transcodable: Callable[[str], bool] | None = None,
) -> Choice:
    """Representation for retrieving instances (PS3.18 Table 8.7.3-2).

    Without a transfer-syntax parameter the stored transfer syntax is returned and named in each
    part's Content-Type. Explicit VR Little Endian is produced by transcoding (PS3.18
    §8.7.3.5.2) when every stored syntax is ``transcodable``; any other specific transfer
    syntax that differs from the stored one is 406.
    """
    for r in accept:
        part = _multipart_type(r, DICOM)
        if part == DICOM and _ts_ok(r, syntaxes):
            return Choice(True, DICOM, None)
        if single and r.media_type == DICOM and _ts_ok(r, syntaxes):
            return Choice(False, DICOM, next(iter(syntaxes)))
        if _transcode_ok(r, syntaxes, transcodable) and (
            part == DICOM or (single and r.media_type == DICOM)
        ):
            return Choice(part == DICOM, DICOM, EXPLICIT_LE, transcode=True)
    raise NotAcceptable(
        'cannot satisfy Accept; available: multipart/related; type="application/dicom" in '
        f"transfer syntax {', '.join(sorted(syntaxes))}"
    )


def _transcode_ok(
    r: MediaRange, syntaxes: set[str], transcodable: Callable[[str], bool] | None
) -> bool:
    """Whether the range asks for Explicit VR LE and every stored syntax can be decoded to it."""
    if transcodable is None or r.params.get("transfer-syntax") != EXPLICIT_LE:
        return False
    return all(ts == EXPLICIT_LE or transcodable(ts) for ts in syntaxes)


def choose_frames(
    accept: list[MediaRange], transfer_syntax: str, encapsulated: bool, single: bool
) -> Choice:
    """Representation for frames and bulk pixel data (PS3.18 Tables 8.7.3-3 and 8.7.3-5)."""
    if not encapsulated:
        native = {EXPLICIT_LE, transfer_syntax, "1.2.840.10008.1.2"}
        for r in accept:
            part = _multipart_type(r, OCTET)
            if part == OCTET and _ts_ok(r, {transfer_syntax}, native):
                return Choice(True, OCTET, EXPLICIT_LE)
            if single and r.media_type == OCTET and _ts_ok(r, {transfer_syntax}, native):
                return Choice(False, OCTET, EXPLICIT_LE)
        raise NotAcceptable(
            "cannot satisfy Accept; frames are available as application/octet-stream"
        )
    media = FRAME_MEDIA.get(transfer_syntax, OCTET)
    for r in accept:
        part = _multipart_type(r, media)
        if part is not None and part in (media, "*/*") and _ts_ok(r, {transfer_syntax}):
            return Choice(True, media, transfer_syntax)
        if part == OCTET and r.params.get("transfer-syntax") in ("*", transfer_syntax):
            return Choice(True, OCTET, transfer_syntax)
        if single and r.matches(media) and r.type != "*" and _ts_ok(r, {transfer_syntax}):
            return Choice(False, media, transfer_syntax)
    raise NotAcceptable(
        f"cannot satisfy Accept; frames are stored compressed ({transfer_syntax}) and available "
        f'as multipart/related; type="{media}" or type="{OCTET}"; transfer-syntax=*'
    )


def choose_bulk(accept: list[MediaRange]) -> Choice:
    """Representation for bulk data (PS3.18 Table 8.7.3-3)."""
    for r in accept:
        part = _multipart_type(r, OCTET)
        if part == OCTET:
            return Choice(True, OCTET, None)
        if r.media_type == OCTET:
            return Choice(False, OCTET, None)
    raise NotAcceptable("cannot satisfy Accept; bulk data is available as application/octet-stream")


def wants_json(accept: list[MediaRange]) -> bool:
    """Whether DICOM JSON is acceptable (metadata and QIDO responses)."""
    return any(r.matches("application/dicom+json") or r.matches("application/json") for r in accept)
