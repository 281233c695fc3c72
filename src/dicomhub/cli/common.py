"""Shared CLI plumbing: settings from flags + environment."""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any

from dicomhub.config import Settings


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    """Flags naming where the archive lives (each also settable as DICOMHUB_*)."""
    parser.add_argument("--data-dir", type=Path, help="data directory (DICOMHUB_DATA_DIR)")
    parser.add_argument(
        "--index",
        help="index URL: sqlite:///path/index.db or postgresql://user@host/db (DICOMHUB_INDEX)",
    )
    parser.add_argument("--blobs", help="blob store URL, e.g. file:///path (DICOMHUB_BLOBS)")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Build Settings: environment first, then the flags that were given."""
    overrides: dict[str, Any] = {}
    for name in (
        "data_dir",
        "index",
        "blobs",
        "host",
        "port",
        "dimse_port",
        "ae_title",
        "log_level",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    overrides.update(extra)
    return Settings(**overrides)


def setup_logging(level: str) -> None:
    """Plain, PHI-free log lines on stderr.

    pydicom reports invalid element values by quoting them (in warnings and on its logger);
    such a value can be a patient's name or ID, so both are silenced below ERROR.
    """
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
