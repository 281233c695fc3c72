"""Behavioural tests for the streaming multipart/related parser and writer (RFC 2046 §5.1)."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator

import pytest

from dicomhub.errors import InvalidInput
from dicomhub.web.multipart import (
    Event,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    encode_part_headers,
    multipart_content_type,
    multipart_stream,
    new_boundary,
    parse_content_type,
)

Part = tuple[dict[str, str], bytes]

BOUNDARY = "8d2f4c1e0b9a7d6f"
B = BOUNDARY.encode()


def collect(events: Iterable[Event]) -> list[Part]:
    """Turns an event sequence into parts, asserting the Start, Data*, End grammar."""
    parts: list[Part] = []
    headers: dict[str, str] | None = None
    chunks: list[bytes | memoryview] = []
    for event in events:
        if isinstance(event, PartStart):
            assert headers is None, "PartStart inside a part"
            headers, chunks = event.headers, []
        elif isinstance(event, PartData):
            assert headers is not None, "PartData outside a part"
            assert event.data, "empty PartData event"
            chunks.append(event.data)
        else:
            assert isinstance(event, PartEnd)
            assert headers is not None, "PartEnd outside a part"
            parts.append((headers, b"".join(chunks)))
            headers = None
    assert headers is None, "last part not ended"
    return parts


def feed_pieces(pieces: Iterable[bytes], boundary: bytes = B, **limits: int) -> list[Part]:
    parser = MultipartParser(boundary, **limits)
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.close())
    assert parser.finished
    return collect(events)


def parse(body: bytes, boundary: bytes = B, **limits: int) -> list[Part]:
    return feed_pieces([body], boundary, **limits)


def split_at(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def random_chunks(body: bytes, rng: random.Random, max_size: int) -> Iterator[bytes]:
    pos = 0
    while pos < len(body):
        size = rng.randint(1, max_size)
        yield body[pos : pos + size]
        pos += size


def encode(parts: list[Part], boundary: str = BOUNDARY) -> bytes:
    return b"".join(multipart_stream(((h, [d]) for h, d in parts), boundary))


def has_real_delimiter(data: bytes, boundary: bytes) -> bool:
    """Whether ``data`` (followed by the writer's CRLF) contains a delimiter line."""
    pattern = rb"\n--" + re.escape(boundary) + rb"(?:--|[ \t]*\r?\n)"
    return re.search(pattern, data + b"\r\n") is not None


def lower_headers(parts: list[Part]) -> list[Part]:
    return [({k.lower(): v for k, v in h.items()}, d) for h, d in parts]


SIMPLE = (
    b"--" + B + b"\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Location: /a\r\n"
    b"\r\n"
    b"first body\r\n"
    b"--" + B + b"\r\n"
    b"Content-Type: application/dicom\r\n"
    b"\r\n"
    b"second\r\nbody\r\n"
    b"--" + B + b"--\r\n"
)
SIMPLE_PARTS: list[Part] = [
    ({"content-type": "application/dicom", "content-location": "/a"}, b"first body"),
    ({"content-type": "application/dicom"}, b"second\r\nbody"),
]


# --- Content-Type parsing -------------------------------------------------------------------


def test_parse_content_type_basic() -> None:
    media_type, params = parse_content_type(
        'Multipart/Related; Type="application/dicom"; boundary=abc123'
    )
    assert media_type == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "abc123"}


def test_parse_content_type_quoted_values() -> None:
    value = r'multipart/related ;  type = "application/dicom" ; boundary="a;b \"c\" d\\e"  ; x=1;'
    media_type, params = parse_content_type(value)
    assert media_type == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": 'a;b "c" d\\e', "x": "1"}


def test_parse_content_type_unquoted_slash_value_is_tolerated() -> None:
    assert parse_content_type("multipart/related; type=application/dicom; boundary=x")[1] == {
        "type": "application/dicom",
        "boundary": "x",
    }


def test_parse_content_type_keeps_value_case() -> None:
    assert parse_content_type("text/plain; Charset=UTF-8")[1] == {"charset": "UTF-8"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "multipart",
        "multipart/",
        "/related",
        "multi part/related",
        "multipart/related boundary=x",
        "multipart/related; boundary",
        "multipart/related; boundary=",
        'multipart/related; boundary="abc',
        "multipart/related; =x",
        "multipart/related; boundary=a; boundary=b",
        'multipart/related; boundary="a"b',
        "multipart/related; boundary=a\r\nX: y",
    ],
)
def test_parse_content_type_rejects_garbage(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_content_type(value)


def test_quoted_boundary_from_content_type_drives_parser() -> None:
    boundary = "gc0p4Jq0M2Yt08jU534c0p:=?(x)"
    body = encode([({"Content-Type": "application/dicom"}, b"payload")], boundary)
    header = multipart_content_type("application/dicom", boundary)
    assert header == f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    media_type, params = parse_content_type(header)
    assert media_type == "multipart/related"
    assert params["type"] == "application/dicom"
    assert parse(body, params["boundary"].encode()) == [
        ({"content-type": "application/dicom"}, b"payload")
    ]


# --- Parser: well-formed bodies -------------------------------------------------------------


def test_simple_body() -> None:
    assert parse(SIMPLE) == SIMPLE_PARTS


def test_every_two_way_split() -> None:
    for cut in range(len(SIMPLE) + 1):
        assert feed_pieces(split_at(SIMPLE, [cut])) == SIMPLE_PARTS, cut


def test_every_three_way_split_around_boundaries() -> None:
    # Two cuts anywhere within the region of the second delimiter line and its neighbourhood.
    start = SIMPLE.index(b"first body") + 5
    end = SIMPLE.index(b"Content-Type", start) + 5
    for a in range(start, end):
        for b in range(a, end):
            assert feed_pieces(split_at(SIMPLE, [a, b])) == SIMPLE_PARTS, (a, b)


def test_byte_at_a_time() -> None:
    assert feed_pieces(SIMPLE[i : i + 1] for i in range(len(SIMPLE))) == SIMPLE_PARTS


def test_preamble_and_epilogue_are_ignored() -> None:
    body = (
        b"This is the preamble. --" + B + b" is not at line start.\r\n"
        b"--" + B + b"X is a look-alike line\r\n" + SIMPLE + b"epilogue\r\n--" + B + b"\r\nmore"
    )
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == SIMPLE_PARTS


def test_transport_padding_after_boundaries() -> None:
    body = (
        b"--" + B + b" \t \r\n\r\none\r\n--" + B + b"\t\r\n\r\ntwo\r\n--" + B + b"--  \r\nepilogue"
    )
    expected: list[Part] = [({}, b"one"), ({}, b"two")]
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == expected


def test_bare_lf_line_endings() -> None:
    body = (
        b"preamble\n--" + B + b"\nContent-Type: application/dicom\n\nline1\nline2\n--" + B + b"\n"
        b"A: b\n\n\n--" + B + b"--\n"
    )
    expected: list[Part] = [
        ({"content-type": "application/dicom"}, b"line1\nline2"),
        ({"a": "b"}, b""),
    ]
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == expected


def test_mixed_line_endings() -> None:
    body = b"--" + B + b"\nA: 1\r\n\ndata\r\r\n--" + B + b"\r\nB: 2\n\r\nx\n--" + B + b"--"
    expected: list[Part] = [({"a": "1"}, b"data\r"), ({"b": "2"}, b"x")]
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == expected


def test_crlf_inside_data_is_preserved() -> None:
    data = b"\r\n\r\nstarts and ends with CRLF\r\n\r\n"
    assert parse(encode([({}, data)])) == [({}, data)]


def test_boundary_without_crlf_before_is_data() -> None:
    data = b"--" + B + b"\r\nx--" + B + b"--\r\n\t--" + B + b"--" + B + b" --" + B
    body = encode([({"A": "1"}, data)])
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == [({"a": "1"}, data)]


def test_partial_and_lookalike_boundaries_are_data() -> None:
    lookalikes = [b"\r\n--" + B[:k] for k in range(len(B))] + [  # Prefixes of the delimiter.
        b"\r\n--" + B + b"X",  # Longer boundary.
        b"\r\n--" + B + b"-x",  # Single dash.
        b"\r\n--" + B + b"  x\r\n",  # Padding then text.
        b"\r\n--" + B + b"\rx",  # Bare CR.
        b"\n-" + B,
        b"\r\n-",
        b"\r",
        b"\r\n",
    ]
    for lookalike in lookalikes:
        data = b"head" + lookalike + b"tail" + lookalike
        body = encode([({}, data), ({}, lookalike)])
        for cut in range(len(body) + 1):
            assert feed_pieces(split_at(body, [cut])) == [({}, data), ({}, lookalike)], lookalike


def test_lookalike_at_very_end_of_part() -> None:
    for tail in (b"\r\n--" + B[:-1], b"\r\n--" + B + b"x", b"\r", b"\r\n-", b"-"):
        body = encode([({}, b"abc" + tail)])
        for cut in range(len(body) + 1):
            assert feed_pieces(split_at(body, [cut])) == [({}, b"abc" + tail)]


def test_empty_parts() -> None:
    parts: list[Part] = [({}, b""), ({"x-a": "1"}, b""), ({}, b"")]
    body = encode(parts)
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == parts


def test_part_without_header_block_or_blank_line() -> None:
    # body-part := MIME-part-headers [CRLF *OCTET] (RFC 2046 §5.1.1): the delimiter may follow
    # the previous delimiter line immediately.
    body = b"--" + B + b"\r\n\r\n--" + B + b"\r\nA: 1\r\n\r\nx\r\n--" + B + b"\n\n--" + B + b"--"
    expected: list[Part] = [({}, b""), ({"a": "1"}, b"x"), ({}, b"")]
    for cut in range(len(body) + 1):
        assert feed_pieces(split_at(body, [cut])) == expected


def test_binary_data_with_all_byte_values() -> None:
    data = bytes(range(256)) * 40 + bytes(range(255, -1, -1))
    parts: list[Part] = [({"Content-Type": "application/octet-stream"}, data), ({}, data[::3])]
    body = encode(parts)
    rng = random.Random(7)
    for _ in range(50):
        assert feed_pieces(random_chunks(body, rng, 300)) == lower_headers(parts)


def test_header_parsing() -> None:
    body = (
        b"--" + B + b"\r\n"
        b"Content-Type:application/dicom  \r\n"
        b"X-Folded: first\r\n"
        b"  second\r\n"
        b"\tthird\r\n"
        b"X-Dup: 1\r\n"
        b"x-dup: 2\r\n"
        b"X-Empty:\r\n"
        b"X-Utf8: caf\xc3\xa9\r\n"
        b"\r\n"
        b"x\r\n--" + B + b"--"
    )
    assert parse(body) == [
        (
            {
                "content-type": "application/dicom",
                "x-folded": "first second third",
                "x-dup": "1, 2",
                "x-empty": "",
                "x-utf8": "café",
            },
            b"x",
        )
    ]


def test_header_block_at_limit_is_accepted() -> None:
    line = b"X-Long: " + b"a" * 100
    body = b"--" + B + b"\r\n" + line + b"\r\n\r\nx\r\n--" + B + b"--"
    assert parse(body, max_header_bytes=len(line) + 1)[0][1] == b"x"  # +1 for the line's CR.


def test_writer_output_for_simple_parts_is_canonical() -> None:
    assert encode([({"Content-Type": "application/dicom"}, b"abc")]) == (
        b"--" + B + b"\r\nContent-Type: application/dicom\r\n\r\nabc\r\n--" + B + b"--\r\n"
    )


@pytest.mark.parametrize("seed", range(60))
def test_random_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    boundary = new_boundary() if seed % 2 else "b" + "x" * rng.randint(0, 68)
    raw = boundary.encode()
    pieces = [
        b"\r\n--" + raw[: rng.randint(0, len(raw) - 1)],
        b"--" + raw,
        b"\r\n--" + raw + b"X",
        b"\r\n",
        b"\r",
        b"\n",
        b"-",
    ]
    parts: list[Part] = []
    for index in range(rng.randint(1, 8)):
        size = rng.choice([0, 1, 2, rng.randint(0, 100), rng.randint(0, 20000)])
        data = bytearray(rng.randbytes(size))
        for _ in range(rng.randint(0, 5)):
            at = rng.randint(0, len(data))
            candidate = data[:at] + rng.choice(pieces) + data[at:]
            if not has_real_delimiter(bytes(candidate), raw):
                data = candidate
        headers = {"Content-Type": "application/dicom", "X-Index": str(index)}
        parts.append((headers, bytes(data)))
    chunked = [(h, [d[i : i + 997] for i in range(0, len(d), 997)] or [b""]) for h, d in parts]
    body = b"".join(multipart_stream(chunked, boundary))
    if rng.random() < 0.5:
        body = b"preamble\r\n" + body + b"epilogue"
    expected = lower_headers(parts)
    for max_size in (1, 7, 64, 1000, 70000):
        got = feed_pieces(random_chunks(body, rng, max_size), raw)
        assert got == expected, (seed, max_size)


def test_every_split_position_of_every_delimiter() -> None:
    parts: list[Part] = [({"A": str(i)}, bytes([i]) * i) for i in range(4)]
    body = encode(parts)
    expected = lower_headers(parts)
    for cut_a in range(len(body) + 1):
        for cut_b in (cut_a + 1, cut_a + len(B) // 2, cut_a + len(B) + 3):
            if cut_b <= len(body):
                assert feed_pieces(split_at(body, [cut_a, cut_b])) == expected


def test_events_interleave_per_feed() -> None:
    parser = MultipartParser(B)
    events = parser.feed(b"--" + B + b"\r\nA: 1\r\n\r\nhello")
    assert events[0] == PartStart({"a": "1"})
    assert b"".join(e.data for e in events if isinstance(e, PartData)) in (b"hello", b"")
    rest = parser.feed(b" world\r\n--" + B + b"--")
    got = collect(events + rest + parser.close())
    assert got == [({"a": "1"}, b"hello world")]


# --- Parser: errors -------------------------------------------------------------------------


def expect_error(pieces: Iterable[bytes], match: str, boundary: bytes = B, **limits: int) -> None:
    with pytest.raises(InvalidInput, match=match):
        feed_pieces(pieces, boundary, **limits)


def test_empty_body() -> None:
    expect_error([], "empty")
    expect_error([b"", b""], "empty")


def test_no_opening_boundary() -> None:
    expect_error([b"just some text\r\nwith lines\r\n"], "no opening boundary")
    expect_error([b"x--" + B + b"\r\n\r\nbody\r\n"], "no opening boundary")


def test_no_parts() -> None:
    expect_error([b"--" + B + b"--\r\n"], "no parts")


def test_truncated_body_at_every_position() -> None:
    end = SIMPLE.index(B + b"--") + len(B) + 2
    for cut in range(end):
        with pytest.raises(InvalidInput):
            parse(SIMPLE[:cut])
    assert parse(SIMPLE[:end]) == SIMPLE_PARTS


def test_missing_closing_boundary() -> None:
    without_close = SIMPLE[: SIMPLE.rindex(b"\r\n--")]
    for suffix in (b"", b"\r\n", b"\r\n--" + B, b"\r\n--" + B + b"\r\n", b"\r\n--" + B + b"-"):
        expect_error([without_close + suffix], "closing boundary missing")


def test_header_block_too_long() -> None:
    line = b"X-Long: " + b"a" * 100 + b"\r\n"
    expect_error([b"--" + B + b"\r\n" + line * 3 + b"\r\nx"], "exceeds 200", max_header_bytes=200)
    # Without a terminator, the parser fails as soon as the limit is passed, not at the end.
    parser = MultipartParser(B, max_header_bytes=200)
    parser.feed(b"--" + B + b"\r\n")
    with pytest.raises(InvalidInput, match="exceeds"):
        for _ in range(1000):
            parser.feed(b"X-Long: aaaa\r\n")
    assert parser.buffered_bytes < 400


@pytest.mark.parametrize(
    "header",
    [b"no colon", b"Bad Name: x", b": empty name", b" leading continuation", b"A: b\rc"],
)
def test_malformed_header_block(header: bytes) -> None:
    body = b"--" + B + b"\r\n" + header + b"\r\n\r\nx\r\n--" + B + b"--"
    expect_error([body], "header")


def test_too_many_parts() -> None:
    body = encode([({}, b"x")] * 4)
    assert len(parse(body, max_parts=4)) == 4
    expect_error([body], "more than 3 parts", max_parts=3)


def test_excessive_transport_padding() -> None:
    expect_error([b"--" + B + b" " * 10000 + b"\r\n"], "padding")


def test_data_after_close() -> None:
    parser = MultipartParser(B)
    parser.feed(SIMPLE)
    parser.close()
    with pytest.raises(InvalidInput, match="after close"):
        parser.feed(b"x")
    with pytest.raises(InvalidInput, match="closed twice"):
        parser.close()


def test_parser_is_unusable_after_error() -> None:
    parser = MultipartParser(B, max_parts=1)
    with pytest.raises(InvalidInput, match="more than 1"):
        parser.feed(encode([({}, b"a"), ({}, b"b")]))
    with pytest.raises(InvalidInput, match="more than 1"):
        parser.feed(b"more")
    with pytest.raises(InvalidInput, match="more than 1"):
        parser.close()


def test_epilogue_data_is_ignored_even_if_large() -> None:
    parser = MultipartParser(B)
    events = parser.feed(SIMPLE)
    for _ in range(100):
        assert parser.feed(b"e" * 65536) == []
    assert parser.buffered_bytes == 0
    assert collect(events + parser.close()) == SIMPLE_PARTS


@pytest.mark.parametrize("boundary", [b"", b"a\r\nb", b"x" * 257])
def test_invalid_parser_boundary(boundary: bytes) -> None:
    with pytest.raises(InvalidInput):
        MultipartParser(boundary)


# --- Memory boundedness ---------------------------------------------------------------------


def test_large_part_is_streamed_with_bounded_memory() -> None:
    chunk_size = 64 * 1024
    block = random.Random(1).randbytes(chunk_size) + b"\r\n--" + B[:-1] + b"\r\n"
    total = 50 * 1024 * 1024
    head = b"--" + B + b"\r\nContent-Type: application/dicom\r\n\r\n"
    tail = b"\r\n--" + B + b"--\r\n"

    def body_chunks() -> Iterator[bytes]:
        yield head
        sent = 0
        offset = 0
        while sent < total:
            size = min(chunk_size, total - sent)
            piece = (block[offset:] + block)[:size]
            offset = (offset + size) % len(block)
            sent += size
            yield piece
        yield tail

    parser = MultipartParser(B)
    received = 0
    max_event = 0
    max_buffered = 0
    ends = 0
    for piece in body_chunks():
        for event in parser.feed(piece):
            if isinstance(event, PartData):
                received += len(event.data)
                max_event = max(max_event, len(event.data))
            elif isinstance(event, PartEnd):
                ends += 1
        max_buffered = max(max_buffered, parser.buffered_bytes)
    parser.close()
    assert received == total
    assert ends == 1
    assert max_event <= chunk_size + len(B) + 8
    assert max_buffered <= len(B) + 8


# --- Writer ---------------------------------------------------------------------------------


def test_new_boundary_is_random_token() -> None:
    boundaries = {new_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    for boundary in boundaries:
        assert 1 <= len(boundary) <= 70
        assert boundary.isalnum()
        assert multipart_content_type("application/dicom", boundary).endswith(
            f"; boundary={boundary}"
        )


def test_encode_part_headers() -> None:
    assert encode_part_headers({}) == b"\r\n"
    assert encode_part_headers({"Content-Type": "application/dicom", "X-A": "é"}) == (
        b"Content-Type: application/dicom\r\nX-A: \xc3\xa9\r\n\r\n"
    )


@pytest.mark.parametrize(
    "headers",
    [{"Bad Name": "x"}, {"": "x"}, {"A": "x\r\nInjected: y"}, {"A": "x\ny"}, {"A": "\x00"}],
)
def test_encode_part_headers_rejects_injection(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        encode_part_headers(headers)


def test_multipart_content_type_params() -> None:
    value = multipart_content_type(
        "application/dicom", "abc", transfer_syntax="1.2.840.10008.1.2.1", start='<a"b>'
    )
    assert value == (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; '
        'start="<a\\"b>"; boundary=abc'
    )
    assert parse_content_type(value) == (
        "multipart/related",
        {
            "type": "application/dicom",
            "transfer-syntax": "1.2.840.10008.1.2.1",
            "start": '<a"b>',
            "boundary": "abc",
        },
    )


@pytest.mark.parametrize("boundary", ["", "x" * 71, "ends with space ", "bad\r\n", "é"])
def test_writer_rejects_invalid_boundary(boundary: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        multipart_content_type("application/dicom", boundary)
    with pytest.raises(ValueError, match="boundary"):
        multipart_stream([], boundary)


def test_multipart_content_type_rejects_reserved_param() -> None:
    with pytest.raises(ValueError, match="parameter"):
        multipart_content_type("application/dicom", "abc", type="x")
    with pytest.raises(ValueError, match="control"):
        multipart_content_type("application/dicom", "abc", start="a\r\nb")


def test_stream_is_lazy() -> None:
    log: list[str] = []

    def body(name: str) -> Iterator[bytes]:
        log.append(f"{name} opened")
        yield name.encode()
        yield b""
        yield b"!"

    def parts() -> Iterator[tuple[dict[str, str], Iterable[bytes]]]:
        for name in ("one", "two"):
            log.append(f"{name} listed")
            yield {}, body(name)

    stream = multipart_stream(parts(), BOUNDARY)
    assert log == []
    assert next(stream) == b"--" + B + b"\r\n\r\n"
    assert log == ["one listed"]
    assert next(stream) == b"one"
    assert log == ["one listed", "one opened"]
    assert next(stream) == b"!"
    assert "two listed" not in log
    rest = b"".join(stream)
    assert rest == b"\r\n--" + B + b"\r\n\r\ntwo!\r\n--" + B + b"--\r\n"


def test_stream_without_parts_is_only_closing_delimiter() -> None:
    assert b"".join(multipart_stream([], BOUNDARY)) == b"--" + B + b"--\r\n"
