"""Garbage collection of what a crash can leave behind: stale pending blob reservations."""

from __future__ import annotations

import logging
import time

from dicomhub.services.archive import Archive
from dicomhub.storage.index import store as index

log = logging.getLogger(__name__)


def collect_stale_pending(archive: Archive, older_than_s: float | None = None) -> int:
    """Delete blobs of reservations older than the pending timeout, then their rows.

    Returns the number of reservations collected.
    """
    timeout = archive.settings.pending_timeout_s if older_than_s is None else older_than_s
    with archive.db.read() as conn:
        keys = index.stale_pending(conn, time.time() - timeout)
    for key in keys:
        archive.blobs.delete(key)
        with archive.db.write() as conn:
            index.release_pending(conn, key)
    if keys:
        log.info("collected %d stale pending blob reservations", len(keys))
    collect_stale_spools(archive, timeout)
    return len(keys)


def collect_stale_spools(archive: Archive, older_than_s: float) -> int:
    """Remove upload spool files older than ``older_than_s`` (left by a crash or a kill)."""
    cutoff = time.time() - older_than_s
    removed = 0
    tmp = archive.settings.tmp_dir
    if not tmp.is_dir():
        return 0
    for path in tmp.glob("spool-*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
