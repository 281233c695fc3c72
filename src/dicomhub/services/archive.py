"""The archive: settings plus the ports (index, blobs) that the services combine.

Built once per process by the CLI or by tests (``Archive.open(settings)``); nothing is created at
import time. Services are plain functions that take an ``Archive``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomhub.config import Settings
from dicomhub.storage.blobs import BlobStore, open_blob_store
from dicomhub.storage.index.engine import IndexDatabase
from dicomhub.storage.index.migrate import upgrade

DEFAULT_TENANT = 1


@dataclass
class Archive:
    """Everything a service needs: configuration, the index and the blob store."""

    settings: Settings
    db: IndexDatabase
    blobs: BlobStore

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Archive:
        """Open (and by default migrate) the index and the blob store named by ``settings``."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        db = IndexDatabase(settings.index_url)
        if migrate:
            upgrade(db)
        return cls(settings=settings, db=db, blobs=blob_store_of(settings))

    def close(self) -> None:
        """Release database connections (and the blob store's, when it has any)."""
        self.db.dispose()
        close = getattr(self.blobs, "close", None)
        if callable(close):
            close()


def blob_store_of(settings: Settings) -> BlobStore:
    """Open the blob store that ``settings`` name (URL plus the S3 connection settings)."""
    secret = settings.s3_secret_key
    return open_blob_store(
        settings.blobs_url,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
        s3_access_key=settings.s3_access_key,
        s3_secret_key=secret.get_secret_value() if secret is not None else None,
        s3_path_style=settings.s3_path_style,
    )
