"""Streaming ``multipart/related`` parsing and writing (RFC 2387, RFC 2046 §5.1).

STOW-RS request bodies and WADO-RS responses are ``multipart/related`` (PS3.18 §8.6.1.2). Parts
may be gigabytes (whole-slide images, long multi-frame objects), so neither side ever buffers a
part: :class:`MultipartParser` is push-based (``feed()`` bytes as they arrive, get events back)
and :func:`multipart_stream` yields the encoded body lazily.

Parser memory is bounded by the size of one fed chunk plus a few boundary lengths (while reading
part bodies) or ``max_header_bytes`` (while reading a part's header block), whatever the part
sizes. Delimiters are found with :meth:`bytes.find`, never by a per-byte Python loop.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from dicomhub.errors import InvalidInput
from dicomhub.web.media import scan_media_type

__all__ = [
    "Event",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "encode_part_headers",
    "multipart_content_type",
    "multipart_stream",
    "new_boundary",
    "parse_content_type",
]


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; ``headers`` has lower-cased names (RFC 2046 §5.1.1).

    Repeated header fields are joined with ``", "``; folded lines are unfolded.
    """

    headers: dict[str, str] = field(hash=False)


@dataclass(frozen=True, slots=True)
class PartData:
    """A chunk of the current part's body; a part may yield many, or none if it is empty.

    ``data`` may be a memoryview of the fed chunk (part bytes are not copied on their way
    through the parser); it stays valid as long as the consumer keeps it.
    """

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part ended (its closing delimiter was seen)."""


Event: TypeAlias = PartStart | PartData | PartEnd

# Parser states.
_PREAMBLE, _HEADERS, _BODY, _EPILOGUE = range(4)
# What follows a candidate "\n--boundary" (see MultipartParser._classify).
_NEED_MORE, _NOT_DELIMITER, _DELIMITER, _CLOSE = range(4)

_CR, _LF, _SP, _HTAB, _DASH = 0x0D, 0x0A, 0x20, 0x09, 0x2D
_MAX_PADDING = 256  # Transport padding we tolerate after a boundary (RFC 2046 §5.1.1).
_MAX_PARSE_BOUNDARY = 256  # RFC 2046 allows 70; be lenient when reading.

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_LINE = re.compile(
    r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*"
)
_CONTINUATION = re.compile(r"[ \t]+([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
# RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Parses a ``Content-Type`` header value (RFC 9110 §8.3.1, RFC 2045 §5.1).

    Args:
        value: E.g. ``multipart/related; type="application/dicom"; boundary="a;b"``.

    Returns:
        The lower-cased media type and its parameters (lower-cased names, unquoted values with
        their case preserved).

    Raises:
        InvalidInput: The value is not a media type, has malformed parameters, or repeats a
            parameter (an ambiguous ``boundary`` must not be guessed).
    """
    type_, subtype, raw_params, _ = scan_media_type(value)
    params: dict[str, str] = {}
    for name, param_value in raw_params:
        if name in params:
            raise InvalidInput(f"Content-Type parameter {name!r} is repeated")
        params[name] = param_value
    return f"{type_}/{subtype}", params


class MultipartParser:
    """Push-based streaming parser for a ``multipart/*`` body (RFC 2046 §5.1.1, RFC 2387).

    Feed the body in chunks of any size; each call returns the events completed so far:
    ``PartStart``, then zero or more ``PartData``, then ``PartEnd``, for each part in order.
    Call :meth:`close` at end of input to verify that the closing delimiter was seen.

    Tolerated: a preamble and an epilogue (both ignored), transport padding after a boundary,
    bare LF instead of CRLF, header continuation lines, a part with neither headers nor blank
    line. A line that starts with ``--boundary`` but goes on with other text is a look-alike and
    stays part data. After any error the parser is unusable.
    """

    def __init__(
        self, boundary: bytes, *, max_header_bytes: int = 16384, max_parts: int = 100000
    ) -> None:
        """Creates a parser.

        Args:
            boundary: The ``boundary`` parameter of the body's Content-Type (unquoted).
            max_header_bytes: Largest header block allowed for one part.
            max_parts: Most parts allowed in the body.

        Raises:
            InvalidInput: The boundary is empty, too long, or contains CR or LF.
            ValueError: A limit is not positive.
        """
        if not boundary or len(boundary) > _MAX_PARSE_BOUNDARY:
            raise InvalidInput(f"multipart boundary must have 1 to {_MAX_PARSE_BOUNDARY} bytes")
        if b"\r" in boundary or b"\n" in boundary:
            raise InvalidInput("multipart boundary contains CR or LF")
        if max_header_bytes < 1 or max_parts < 1:
            raise ValueError("max_header_bytes and max_parts must be positive")
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        dash_boundary = b"--" + boundary
        self._delimiter = b"\n" + dash_boundary  # An optional preceding CR is stripped.
        # A delimiter cut by a chunk edge is at most CR + all but its last byte.
        self._keep = len(self._delimiter)
        self._bare_delimiters = (b"\r\n" + dash_boundary, b"\n" + dash_boundary)
        # A leading CRLF lets a body that starts with "--boundary" match like any other line.
        self._buf = b"\r\n"
        self._state = _PREAMBLE
        self._header_scan = 0
        self._parts = 0
        self._received = 0
        self._closed = False
        self._error: str | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held back internally (a possible delimiter prefix, or a partial header block)."""
        return len(self._buf)

    @property
    def finished(self) -> bool:
        """Whether the closing delimiter has been seen (the rest is epilogue)."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> list[Event]:
        """Consumes the next chunk of the body.

        Args:
            data: Any number of bytes, split anywhere.

        Returns:
            The events this chunk completed, in order.

        Raises:
            InvalidInput: The body is malformed, exceeds a limit, the parser was closed, or an
                earlier call failed.
        """
        self._check_usable()
        if self._closed:
            raise InvalidInput("multipart data received after close()")
        if not data:
            return []
        self._received += len(data)
        if self._state == _EPILOGUE:
            return []  # RFC 2046 §5.1.1: the epilogue is to be ignored.
        if self._state == _BODY:
            fast = self._body_without_delimiter(data)
            if fast is not None:
                return fast
        self._buf = self._buf + data if self._buf else bytes(data)
        events: list[Event] = []
        try:
            self._run(events)
        except InvalidInput as exc:
            self._error = exc.reason
            raise
        return events

    def close(self) -> list[Event]:
        """Signals end of input.

        Returns:
            Remaining events (always empty: every event is emitted by :meth:`feed`).

        Raises:
            InvalidInput: The body was empty, had no opening boundary, or ended before the
                closing delimiter (truncated); or the parser was already closed or had failed.
        """
        self._check_usable()
        if self._closed:
            raise InvalidInput("multipart parser closed twice")
        self._closed = True
        if self._received == 0:
            self._error = "empty multipart body"
        elif self._state == _PREAMBLE:
            self._error = "no opening boundary in multipart body"
        elif self._state != _EPILOGUE:
            self._error = "truncated multipart body: closing boundary missing"
        self._check_usable()
        return []

    def _check_usable(self) -> None:
        if self._error is not None:
            raise InvalidInput(self._error)

    def _run(self, events: list[Event]) -> None:
        while True:
            if self._state == _BODY:
                progressed = self._read_body(events)
            elif self._state == _HEADERS:
                progressed = self._read_headers(events)
            elif self._state == _PREAMBLE:
                progressed = self._read_preamble()
            else:
                self._buf = b""
                return
            if not progressed:
                return

    def _classify(self, buf: bytes, pos: int) -> tuple[int, int]:
        """Tells what a ``LF --boundary`` ending at ``pos`` is (RFC 2046 §5.1.1).

        Returns:
            ``(kind, end)``: ``_CLOSE`` for ``--`` (end after it), ``_DELIMITER`` for optional
            padding then CRLF or LF (end after the line), ``_NOT_DELIMITER`` for a look-alike, or
            ``_NEED_MORE`` if the bytes so far cannot tell.
        """
        size = len(buf)
        if size - pos >= 2:
            if buf[pos] == _DASH and buf[pos + 1] == _DASH:
                return _CLOSE, pos + 2
        elif pos == size or buf[pos] == _DASH:
            return _NEED_MORE, 0
        end = pos
        while end < size and buf[end] in (_SP, _HTAB):
            end += 1
        if end - pos > _MAX_PADDING:
            raise InvalidInput("transport padding after a multipart boundary is too long")
        if end == size:
            return _NEED_MORE, 0
        if buf[end] == _LF:
            return _DELIMITER, end + 1
        if buf[end] == _CR:
            if end + 1 == size:
                return _NEED_MORE, 0
            if buf[end + 1] == _LF:
                return _DELIMITER, end + 2
        return _NOT_DELIMITER, 0

    def _find_delimiter(self, buf: bytes) -> tuple[int, int, int]:
        """Finds the first real delimiter: ``(offset of its LF or -1, kind, end)``."""
        start = 0
        while True:
            found = buf.find(self._delimiter, start)
            if found < 0:
                return -1, _NEED_MORE, 0
            kind, end = self._classify(buf, found + len(self._delimiter))
            if kind != _NOT_DELIMITER:
                return found, kind, end
            start = found + 1

    def _read_preamble(self) -> bool:
        buf = self._buf
        found, kind, end = self._find_delimiter(buf)
        if found < 0:
            if len(buf) > self._keep:
                self._buf = buf[-self._keep :]
            return False
        if kind == _NEED_MORE:
            self._buf = buf[found:]
            return False
        if kind == _CLOSE:
            raise InvalidInput("multipart body has no parts (closing boundary comes first)")
        self._buf = buf[end:]
        self._state = _HEADERS
        self._header_scan = 0
        return True

    def _read_headers(self, events: list[Event]) -> bool:
        buf = self._buf
        # body-part := MIME-part-headers [CRLF *OCTET]: a part may lack even the blank line, in
        # which case the next delimiter (with its leading CRLF) follows at once.
        for bare in self._bare_delimiters:
            if len(buf) < len(bare):
                if bare.startswith(buf):
                    return False
            elif buf.startswith(bare):
                kind, _ = self._classify(buf, len(bare))
                if kind == _NEED_MORE:
                    return False
                if kind != _NOT_DELIMITER:
                    self._start_part({}, events)  # Leave the delimiter for _read_body.
                    return True
        if buf.startswith(b"\n"):
            block, rest = b"", 1
        elif buf.startswith(b"\r\n"):
            block, rest = b"", 2
        else:
            lf_lf = buf.find(b"\n\n", self._header_scan)
            lf_crlf = buf.find(b"\n\r\n", self._header_scan)
            if lf_lf < 0 and lf_crlf < 0:
                if len(buf) - 2 > self._max_header_bytes:
                    raise InvalidInput(
                        f"multipart part header block exceeds {self._max_header_bytes} bytes"
                    )
                self._header_scan = max(0, len(buf) - 2)
                return False
            if lf_crlf < 0 or 0 <= lf_lf < lf_crlf:
                block, rest = buf[:lf_lf], lf_lf + 2
            else:
                block, rest = buf[:lf_crlf], lf_crlf + 3
            if len(block) > self._max_header_bytes:
                raise InvalidInput(
                    f"multipart part header block exceeds {self._max_header_bytes} bytes"
                )
        self._start_part(_parse_headers(block), events)
        self._buf = buf[rest:]
        return True

    def _start_part(self, headers: dict[str, str], events: list[Event]) -> None:
        if self._parts >= self._max_parts:
            raise InvalidInput(f"multipart body has more than {self._max_parts} parts")
        self._parts += 1
        events.append(PartStart(headers))
        self._state = _BODY

    def _body_without_delimiter(self, data: bytes) -> list[Event] | None:
        """Part data in a chunk with no delimiter in sight, without copying it; else ``None``.

        The common case of a large part: the chunk and the bytes held back before it hold no
        delimiter, so all but the last ``keep`` bytes are part data (those may begin one). The
        events and the bytes held back are those of the general path, with the held-back bytes
        as an event of their own and the chunk passed on as a view.
        """
        keep = self._keep
        size = len(data)
        if size <= keep:
            return None
        # A delimiter starting in the held-back bytes ends within the first `keep` bytes of data.
        if (self._buf + data[:keep]).find(self._delimiter) >= 0:
            return None
        if data.find(self._delimiter) >= 0:
            return None
        events: list[Event] = []
        if self._buf:
            events.append(PartData(self._buf))
        view = memoryview(data)
        events.append(PartData(view[: size - keep]))
        self._buf = bytes(view[size - keep :])
        return events

    def _read_body(self, events: list[Event]) -> bool:
        buf = self._buf
        found, kind, end = self._find_delimiter(buf)
        if found < 0:
            cut = len(buf) - self._keep
            if cut > 0:
                events.append(PartData(buf[:cut]))
                self._buf = buf[cut:]
            return False
        # The CRLF before "--boundary" belongs to the delimiter, not to the data.
        cut = found - 1 if found > 0 and buf[found - 1] == _CR else found
        if cut > 0:
            events.append(PartData(buf[:cut]))
        if kind == _NEED_MORE:
            self._buf = buf[cut:]
            return False
        events.append(PartEnd())
        if kind == _CLOSE:
            self._state = _EPILOGUE
            self._buf = b""
            return False
        self._buf = buf[end:]
        self._state = _HEADERS
        self._header_scan = 0
        return True


def _parse_headers(block: bytes) -> dict[str, str]:
    """Parses a part's header block (RFC 2046 §5.1.1, RFC 5322 §2.2 syntax)."""
    if not block:
        return {}
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    headers: dict[str, str] = {}
    last: str | None = None
    for raw_line in text.split("\n"):
        line = raw_line.removesuffix("\r")
        continuation = _CONTINUATION.fullmatch(line)
        if continuation is not None:
            if last is None:
                raise InvalidInput("multipart part headers start with a continuation line")
            if continuation.group(1):
                headers[last] = f"{headers[last]} {continuation.group(1)}".lstrip()
            continue
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise InvalidInput("malformed multipart part header line")
        name, value = match.group(1).lower(), match.group(2)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        last = name
    return headers


def new_boundary() -> str:
    """Returns a fresh random boundary: 32 hex digits, 128 bits (RFC 2046 §5.1.1)."""
    return secrets.token_hex(16)


def encode_part_headers(headers: dict[str, str]) -> bytes:
    """Encodes a part's header block, including the blank line that ends it (RFC 2046 §5.1.1).

    Args:
        headers: Header names (tokens) to values. Values are UTF-8 encoded.

    Returns:
        ``Name: value`` lines and a blank line, all CRLF-terminated.

    Raises:
        ValueError: A name is not a token or a value contains control characters (which could
            inject headers); this is a server-side bug, not a client error.
    """
    lines: list[str] = []
    for name, value in headers.items():
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"invalid multipart part header name {name!r}")
        if _CTL.search(value) is not None:
            raise ValueError(f"multipart part header {name!r} contains control characters")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def multipart_stream(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    """Encodes parts as a ``multipart/related`` body, lazily (RFC 2046 §5.1.1, PS3.18 §8.6.1.2).

    Each part's headers and body chunks are pulled only when the consumer asks for more, so a
    WADO-RS response streams straight from storage. The caller must use a boundary that cannot
    occur in the data; :func:`new_boundary` is random with 128 bits, so it is not checked.
    With no parts, only the closing delimiter is produced.

    Args:
        parts: ``(headers, body chunks)`` per part.
        boundary: The boundary, as in the Content-Type (see :func:`multipart_content_type`).

    Returns:
        An iterator over encoded chunks: delimiter lines with headers, the body chunks as given
        (empty ones skipped), and the closing delimiter.

    Raises:
        ValueError: The boundary is not valid per RFC 2046 (raised immediately); a part's
            headers are invalid (raised when that part is reached).
    """
    _check_boundary(boundary)
    return _stream(parts, boundary.encode("ascii"))


def _stream(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: bytes
) -> Iterator[bytes]:
    dash_boundary = b"--" + boundary
    lead = b""
    for headers, body in parts:
        yield lead + dash_boundary + b"\r\n" + encode_part_headers(headers)
        lead = b"\r\n"
        for chunk in body:
            if chunk:
                yield chunk
    yield lead + dash_boundary + b"--\r\n"


def multipart_content_type(type_: str, boundary: str, **params: str) -> str:
    """Builds a ``multipart/related`` Content-Type (RFC 2387 §3, PS3.18 §8.6.1.2).

    Args:
        type_: The root media type, e.g. ``application/dicom``.
        boundary: The boundary used by :func:`multipart_stream`.
        **params: Further parameters; ``_`` in names becomes ``-`` (so ``transfer_syntax=...``
            gives ``transfer-syntax=...``).

    Returns:
        E.g. ``multipart/related; type="application/dicom"; boundary=0f3a...``, with values
        quoted where they are not tokens (RFC 9110 §5.6.4).

    Raises:
        ValueError: Invalid boundary, a parameter named ``type`` or ``boundary``, a name that is
            not a token, or a value with control characters.
    """
    _check_boundary(boundary)
    items = [("type", type_)]
    for raw_name, value in params.items():
        name = raw_name.replace("_", "-").lower()
        if name in ("type", "boundary") or _TOKEN.fullmatch(name) is None:
            raise ValueError(f"invalid multipart/related parameter name {raw_name!r}")
        items.append((name, value))
    items.append(("boundary", boundary))
    return "multipart/related" + "".join(f"; {name}={_quote(value)}" for name, value in items)


def _quote(value: str) -> str:
    """Returns ``value`` as a token, or as a quoted-string if it is not one (RFC 9110 §5.6.4)."""
    if _TOKEN.fullmatch(value) is not None:
        return value
    if _CTL.search(value) is not None:
        raise ValueError("media type parameter value contains control characters")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_boundary(boundary: str) -> None:
    if _BOUNDARY.fullmatch(boundary) is None:
        raise ValueError(f"invalid multipart boundary {boundary!r} (RFC 2046 §5.1.1)")
