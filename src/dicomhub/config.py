"""One typed settings object for every command.

Every option is settable by command-line flag or by environment variable ``DICOMHUB_<NAME>``
(e.g. ``DICOMHUB_DATA_DIR``). Settings are built by the CLI or by tests and passed explicitly to
``create_app`` and the services; nothing reads them at import time.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DuplicatePolicy(StrEnum):
    """What to do when a stored SOP Instance UID arrives again with different content."""

    REJECT = "reject"
    OVERWRITE = "overwrite"


class Settings(BaseSettings):
    """dicomhub configuration (see docs/configuration.md for each option)."""

    model_config = SettingsConfigDict(env_prefix="DICOMHUB_", extra="ignore")

    data_dir: Path = Field(default=Path("./dicomhub-data"))
    index: str | None = Field(
        default=None, description="Index URL; default sqlite:///<data_dir>/index.db"
    )
    blobs: str | None = Field(
        default=None, description="Blob store URL; default file://<data_dir>/blobs"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    dimse_port: int = Field(default=11112, ge=0, le=65535)
    ae_title: str = "DICOMHUB"
    base_path: str = "/dicomweb"

    # Bounds (every size, count and depth is bounded).
    max_request_bytes: int = Field(default=4 * 1024**3, ge=1024)
    max_instance_bytes: int = Field(default=2 * 1024**3, ge=1024)
    max_parts: int = Field(default=10000, ge=1)
    qido_max_limit: int = Field(default=1000, ge=1)
    qido_default_limit: int = Field(default=100, ge=1)
    bulk_threshold: int = Field(default=1024, ge=16)
    max_frames_per_request: int = Field(default=10000, ge=1)

    duplicate_policy: DuplicatePolicy = DuplicatePolicy.REJECT
    pending_timeout_s: float = Field(default=3600.0, gt=0)
    duplicate_wait_s: float = Field(default=30.0, ge=0)

    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="HTTP server processes; 0 = one per CPU core (at most 8)",
    )
    run_workers: bool = True
    worker_poll_s: float = Field(default=1.0, gt=0)
    log_level: str = "info"

    @property
    def index_url(self) -> str:
        """The index database URL (SQLite file in the data directory by default)."""
        if self.index:
            return self.index
        return f"sqlite:///{(self.data_dir / 'index.db').resolve()}"

    @property
    def blobs_url(self) -> str:
        """The blob store URL (a folder in the data directory by default)."""
        if self.blobs:
            return self.blobs
        return f"file://{(self.data_dir / 'blobs').resolve()}"

    @property
    def process_count(self) -> int:
        """How many server processes ``serve`` runs (``workers``, or one per core)."""
        if self.workers:
            return self.workers
        return max(1, min(8, os.cpu_count() or 1))

    @property
    def tmp_dir(self) -> Path:
        """Spool folder for uploads in progress (same filesystem as the default blob store)."""
        return self.data_dir / "tmp"
