"""One typed settings object for every command.

Every option is settable by command-line flag or by environment variable ``DICOMHUB_<NAME>``
(e.g. ``DICOMHUB_DATA_DIR``). Settings are built by the CLI or by tests and passed explicitly to
``create_app`` and the services; nothing reads them at import time.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Default named windows (center, width) for ``preset=`` (``window_presets`` overrides them).
DEFAULT_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (50.0, 400.0),
    "liver": (60.0, 160.0),
    "stroke": (40.0, 40.0),
}


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
    # DIMSE gateway (PS3.7, PS3.8): who may associate and the bounds of each association.
    dimse_host: str | None = Field(
        default=None, description="DIMSE listen address; default: the HTTP host"
    )
    dimse_open_ingest: bool = Field(
        default=False, description="accept C-STORE (only) from unknown AEs, into the default tenant"
    )
    dimse_check_host: bool = Field(
        default=True, description="reject a registered AE title calling from another host"
    )
    dimse_max_associations: int = Field(default=64, ge=1, le=4096)
    dimse_max_associations_per_ae: int = Field(default=16, ge=1, le=4096)
    dimse_max_pdu: int = Field(default=262144, ge=0, description="bytes; 0 = unlimited")
    dimse_acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    dimse_idle_timeout_s: float = Field(
        default=60.0, gt=0, description="network timeout: an idle association is closed"
    )
    dimse_max_find_results: int = Field(default=10000, ge=1)
    base_path: str = "/dicomweb"

    # Bounds (every size, count and depth is bounded).
    max_request_bytes: int = Field(default=4 * 1024**3, ge=1024)
    max_instance_bytes: int = Field(default=2 * 1024**3, ge=1024)
    max_parts: int = Field(default=10000, ge=1)
    qido_max_limit: int = Field(default=1000, ge=1)
    qido_default_limit: int = Field(default=100, ge=1)
    bulk_threshold: int = Field(default=1024, ge=16)
    max_frames_per_request: int = Field(default=10000, ge=1)

    # Rendering (PS3.18 §10.4.1.1.3): decoded-frame cache, thumbnails, named window presets.
    render_cache_bytes: int = Field(default=256 * 1024**2, ge=0)
    thumbnail_size: int = Field(default=128, ge=16, le=1024)
    window_presets: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PRESETS),
        description="preset name -> (window center, window width), e.g. JSON in the environment",
    )

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
    # Durable jobs of the JSON API (SCU send/query/retrieve): lease, retries, retention.
    job_lease_s: float = Field(
        default=300.0, gt=0, description="a running job not heard of for this long is reclaimed"
    )
    job_max_attempts: int = Field(default=5, ge=1, le=100)
    job_retry_base_s: float = Field(
        default=10.0, ge=0, description="first retry delay; doubled at each further attempt"
    )
    job_retry_max_s: float = Field(default=900.0, ge=0, description="longest retry delay")
    job_retention_s: float = Field(
        default=7 * 86400.0, gt=0, description="finished jobs are deleted after this long"
    )
    # Bounds of the JSON API (every count in a request is bounded).
    api_max_items: int = Field(default=100, ge=1, description="UIDs per send/retrieve request")
    api_max_query_keys: int = Field(default=64, ge=1)
    api_max_page: int = Field(default=500, ge=1, description="largest page of GET /api/jobs")
    api_max_body_bytes: int = Field(default=65536, ge=1024)
    scu_max_query_results: int = Field(
        default=1000, ge=1, description="C-FIND matches kept in a query job's result"
    )
    log_level: str = "info"

    # S3-compatible blob store (``blobs = s3://bucket/prefix``). Each setting is read from
    # DICOMHUB_S3_<NAME>, else from the standard AWS variable; None leaves it to boto3's own
    # chain (AWS config files, instance roles).
    s3_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "s3_endpoint", "DICOMHUB_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        ),
        description="S3 endpoint URL (e.g. http://127.0.0.1:8333); None for AWS",
    )
    s3_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "s3_region", "DICOMHUB_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"
        ),
    )
    s3_access_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "s3_access_key", "DICOMHUB_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"
        ),
    )
    s3_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "s3_secret_key", "DICOMHUB_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"
        ),
    )
    s3_path_style: bool | None = Field(
        default=None,
        validation_alias=AliasChoices("s3_path_style", "DICOMHUB_S3_PATH_STYLE"),
        description="Path-style addressing; None = path-style when an endpoint is set",
    )

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
