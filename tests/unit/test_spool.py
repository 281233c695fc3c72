"""Spool.write_many: the bytes, preamble zeroing (PS3.10 §7.1) and hash of write(), in one call."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from dicomhub.errors import PayloadTooLarge
from dicomhub.services.spool import PREAMBLE, Spool


def _expected(data: bytes) -> bytes:
    return bytes(min(len(data), PREAMBLE)) + data[PREAMBLE:]


def test_write_many_equals_write(tmp_path: Path) -> None:
    rng = random.Random(7)
    for _ in range(50):
        data = rng.randbytes(rng.randrange(0, 3000))
        cuts = sorted(rng.randrange(0, len(data) + 1) for _ in range(rng.randrange(0, 6)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        spool = Spool(tmp_path, 10_000)
        spool.write_many([memoryview(c) if i % 2 else c for i, c in enumerate(chunks)])
        sha = spool.finish()
        stored = spool.path.read_bytes()
        assert stored == _expected(data)
        assert sha == hashlib.sha256(stored).hexdigest()
        assert spool.size == len(data)
        spool.discard()


def test_write_many_bounds_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    spool.write_many([b"a" * 60])
    with pytest.raises(PayloadTooLarge):
        spool.write_many([b"b" * 30, b"c" * 20])
    assert not spool.path.exists()
