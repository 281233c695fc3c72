"""The blob store port: opaque keys to immutable byte strings.

Writes are create-only (a key is never overwritten), reads may be ranged. Keys come from
``keys.new_key`` and never contain UIDs or PHI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    """Minimal storage port, in the spirit of Orthanc's ``IStorageArea``."""

    def put_file(self, key: str, path: Path) -> None:
        """Durably store the file at ``path`` under ``key``; the file may be consumed (moved)."""

    def put_files(self, items: list[tuple[str, Path]]) -> None:
        """Durably store several files at once (a backend may share syncs between them)."""

    def open_range(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``key`` from ``offset`` (``length`` bytes or to the end)."""

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes of ``key`` from ``offset``."""

    def local_path(self, key: str) -> Path | None:
        """A local filesystem path for ``key`` when the backend has one, else ``None``."""

    def size(self, key: str) -> int | None:
        """The size of ``key`` in bytes, or ``None`` when it does not exist."""

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    def keys(self) -> Iterator[str]:
        """Every key in the store (for fsck)."""
