"""Blob store backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from dicomhub.errors import InvalidInput
from dicomhub.storage.blobs.base import BlobStore
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore


def open_blob_store(url: str) -> BlobStore:
    """Open the blob store named by ``url`` (``file:///path``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FilesystemBlobStore(Path(parsed.path))
    raise InvalidInput(f"unsupported blob store URL scheme {parsed.scheme!r}")


__all__ = ["BlobStore", "FilesystemBlobStore", "open_blob_store"]
