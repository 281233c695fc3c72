"""Filesystem blob store: the embedded default.

Durability: the caller's temporary file is fsync'ed, renamed into place and the containing
directory fsync'ed, so an acknowledged blob survives a crash or power loss.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from dicomhub.errors import IntegrityError
from dicomhub.storage.blobs.keys import is_key

CHUNK = 1024 * 1024


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Fsync a directory so a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    """Blobs as files under ``root/ab/cd/<key>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not is_key(key):
            raise ValueError("not a blob key")
        return self.root / key

    def put_file(self, key: str, path: Path) -> None:
        """Move ``path`` to ``key`` durably (fsync file, rename, fsync directory)."""
        self.put_files([(key, path)])

    def put_files(self, items: list[tuple[str, Path]]) -> None:
        """Move files into place: fsync each, rename each, then fsync each folder once."""
        for _, path in items:
            fsync_file(path)
        folders: set[Path] = set()
        for key, path in items:
            dest = self._path(key)
            if dest.exists():
                raise IntegrityError("blob key collision")
            parent = dest.parent
            if parent not in folders and not parent.is_dir():
                parent.mkdir(parents=True, exist_ok=True)
                fsync_dir(parent.parent)
                fsync_dir(parent.parent.parent)
            folders.add(parent)
            try:
                os.rename(path, dest)
            except OSError as exc:
                if exc.errno != 18:  # EXDEV: spool on another filesystem
                    raise
                self._copy(path, dest)
                path.unlink()
        for folder in folders:
            fsync_dir(folder)

    def _copy(self, src: Path, dest: Path) -> None:
        tmp = dest.with_name(dest.name + ".part")
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.rename(tmp, dest)

    def open_range(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the requested byte range in chunks of at most 1 MiB."""
        try:
            f = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise IntegrityError("blob missing") from exc
        with f:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                n = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = f.read(n)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
            if remaining:
                raise IntegrityError("blob shorter than indexed")

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` with one positioned read."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise IntegrityError("blob missing") from exc
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise IntegrityError("blob shorter than indexed")
        return data

    def local_path(self, key: str) -> Path | None:
        """Return the file path of ``key``."""
        return self._path(key)

    def size(self, key: str) -> int | None:
        """Return the file size, or None when missing."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """Unlink the file (missing is fine)."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[str]:
        """Walk the two-level fan-out and yield every key-shaped file."""
        if not self.root.is_dir():
            return
        for a in sorted(self.root.iterdir()):
            if not a.is_dir():
                continue
            for b in sorted(a.iterdir()):
                if not b.is_dir():
                    continue
                for f in sorted(b.iterdir()):
                    key = f"{a.name}/{b.name}/{f.name}"
                    if is_key(key):
                        yield key
