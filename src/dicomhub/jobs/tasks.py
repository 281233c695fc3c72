"""Job functions: thin calls into the ports. Each must be idempotent (a job may run twice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dicomhub.services.archive import Archive


def delete_blobs(archive: Archive, payload: dict[str, Any]) -> None:
    """Remove blobs no index row references any more (after DELETE or overwrite)."""
    for key in payload.get("keys", []):
        archive.blobs.delete(str(key))


TASKS: dict[str, Callable[[Archive, dict[str, Any]], None]] = {
    "delete_blobs": delete_blobs,
}
