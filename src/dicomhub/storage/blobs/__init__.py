"""Blob store backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from dicomhub.errors import InvalidInput
from dicomhub.storage.blobs.base import BlobStore
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore


def open_blob_store(
    url: str,
    *,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
    s3_path_style: bool | None = None,
) -> BlobStore:
    """Open the blob store named by ``url``: ``file:///path`` or ``s3://bucket/prefix``.

    The ``s3_*`` arguments configure an S3 store (endpoint for non-AWS stores, region,
    credentials, path-style addressing); unset ones fall back to boto3's credential chain.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FilesystemBlobStore(Path(parsed.path))
    if parsed.scheme == "s3":
        from dicomhub.storage.blobs.s3 import S3BlobStore, parse_s3_url  # imports boto3

        try:
            bucket, prefix = parse_s3_url(url)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        return S3BlobStore(
            bucket,
            prefix,
            endpoint=s3_endpoint,
            region=s3_region,
            access_key=s3_access_key,
            secret_key=s3_secret_key,
            path_style=s3_path_style,
        )
    raise InvalidInput(f"unsupported blob store URL scheme {parsed.scheme!r}")


__all__ = ["BlobStore", "FilesystemBlobStore", "open_blob_store"]
