"""Spooling of incoming DICOM streams to a temporary file.

Every ingest path (STOW-RS parts, C-STORE, browser upload, CLI import) writes the incoming bytes
through a :class:`Spool`: it bounds the size, zeroes the 128-byte preamble on the fly (PS3.10
§7.1 leaves the preamble free for applications; CVE-2019-11687 shows why a stored file must not
carry an executable header) and hashes the bytes as they are stored, so the file is read once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from dicomhub.errors import PayloadTooLarge

PREAMBLE = 128
_IOV_MAX = 1024  # buffers per writev (POSIX guarantees at least 16; Linux allows 1024)


class Spool:
    """A write-once temporary file with size bound, preamble zeroing and SHA-256."""

    def __init__(self, directory: Path, max_bytes: int, *, hash_on_write: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="spool-", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        # With hash_on_write=False, finish() returns None and ingest hashes the file (reading
        # it back); hashing the bytes as they are written is cheaper.
        self._hash = hashlib.sha256() if hash_on_write else None
        self.size = 0
        self.max_bytes = max_bytes
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; raises PayloadTooLarge past the bound (the spool is then discarded)."""
        self.write_many((data,))

    def write_many(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Append several chunks with one system call and no copy of their bytes.

        Raises:
            PayloadTooLarge: past the bound (the spool is then discarded).
        """
        n = sum(map(len, chunks))
        if self.size + n > self.max_bytes:
            self.discard()
            raise PayloadTooLarge(f"instance larger than the limit of {self.max_bytes} bytes")
        views: list[bytes | memoryview] = []
        pos = self.size
        for chunk in chunks:
            if pos < PREAMBLE and chunk:
                head = min(PREAMBLE - pos, len(chunk))
                views.append(bytes(head))  # the preamble, zeroed (PS3.10 §7.1)
                pos += head
                chunk = memoryview(chunk)[head:]
            if chunk:
                views.append(chunk)
                pos += len(chunk)
        if self._hash is not None:
            for view in views:
                self._hash.update(view)
        _write_all(self._file.fileno(), views)
        self.size += n

    def finish(self) -> str | None:
        """Close the file; return the hex SHA-256 of its content when hashed on write."""
        if not self._closed:
            self._file.close()
            self._closed = True
        return self._hash.hexdigest() if self._hash is not None else None

    def discard(self) -> None:
        """Close and delete the temporary file (idempotent)."""
        if not self._closed:
            self._file.close()
            self._closed = True
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The consumer moves the file away on success; whatever is left here is garbage.
        self.discard()


def _write_all(fd: int, views: list[bytes | memoryview]) -> None:
    """``os.writev`` until every byte is written (a write may be partial)."""
    while views:
        done = os.writev(fd, views[:_IOV_MAX])
        while views and done >= len(views[0]):
            done -= len(views[0])
            views = views[1:]
        if done:
            views[0] = memoryview(views[0])[done:]


def spool_file(source: Path, directory: Path, max_bytes: int) -> tuple[Spool, str]:
    """Copy ``source`` into a new spool; return the spool and its SHA-256."""
    spool = Spool(directory, max_bytes)
    try:
        with source.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                spool.write(chunk)
    except BaseException:
        spool.discard()
        raise
    sha = spool.finish()
    assert sha is not None
    return spool, sha


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file (hashlib releases the GIL on large buffers)."""
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()
