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
        return cls(settings=settings, db=db, blobs=open_blob_store(settings.blobs_url))

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()
