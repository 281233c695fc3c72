"""A seekable, read-only file object over a blob, read lazily with ranged reads.

For a store without local paths (S3), a parser that needs only part of a blob (pydicom reading
the header up to the pixel data) costs a few ranged GETs instead of a download of the object.
"""

from __future__ import annotations

import io

from dicomhub.storage.blobs.base import BlobStore

BUFFER = 256 * 1024


class BlobRawReader(io.RawIOBase):
    """Unbuffered reads of ``key`` (``size`` bytes, as indexed) through ``read_range``."""

    def __init__(self, store: BlobStore, key: str, size: int) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable (the size is known)."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (no I/O)."""
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the current position with one ranged read."""
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._store.read_range(self._key, self._pos, n)
        buffer[:n] = data
        self._pos += n
        return n


class BlobFile(io.BufferedIOBase):
    """A buffered reader of a blob.

    Not an ``io.BufferedReader`` on purpose: pydicom takes one for a file on disk and would
    try to re-open it by name.
    """

    def __init__(self, raw: BlobRawReader, buffer_size: int = BUFFER) -> None:
        super().__init__()
        self._inner = io.BufferedReader(raw, buffer_size=buffer_size)

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all remaining bytes when negative or None)."""
        return self._inner.read(size)

    def read1(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes with at most one ranged read."""
        return self._inner.read1(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position."""
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        """The current position."""
        return self._inner.tell()

    def close(self) -> None:
        """Close the reader."""
        self._inner.close()
        super().close()


def open_blob_reader(store: BlobStore, key: str, size: int) -> BlobFile:
    """A buffered, seekable reader of ``key`` (reads ahead in blocks of 256 KiB)."""
    return BlobFile(BlobRawReader(store, key, size))
