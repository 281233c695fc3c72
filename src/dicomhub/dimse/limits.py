"""Association limits shared by every process serving one DIMSE port.

``dicomhub serve`` runs one process per core, each accepting DIMSE associations on the same port
(``SO_REUSEPORT``: the kernel spreads connections over them), so the limits on concurrent
associations, in all and per calling AE, must be counted across processes. The count lives in a
small memory-mapped file of fixed slots (one per admitted association: process ID, tenant and
calling AE title), changed under an exclusive ``flock``. A slot whose process is gone (a killed
worker) is freed by the next process that scans the table, so a crash never leaks capacity.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

_SLOT: Final = struct.Struct("<ii16s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AssociationTable:
    """Fixed slots for admitted associations, shared through a memory-mapped file.

    Args:
        path: The table's file (created if missing; sized to ``slots``).
        slots: The most associations admitted at once (the global limit).
    """

    def __init__(self, path: Path, slots: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.slots = slots
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._closed = False
        size = slots * _SLOT.size
        with self._exclusive():
            if os.fstat(self._fd).st_size != size:
                os.ftruncate(self._fd, 0)  # another size: a stale table of other settings
                os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def claim(self, tenant_id: int, ae_title: str, per_ae: int) -> int | None:
        """Take a slot for an association of ``ae_title``; None when a limit is reached."""
        key = ae_title.encode("ascii", "replace")[:16]
        with self._exclusive():
            if self._closed:
                return None
            free: int | None = None
            mine = 0
            for i in range(self.slots):
                pid, tenant, ae = _SLOT.unpack_from(self._map, i * _SLOT.size)
                if pid and pid != self._pid and not _alive(pid):
                    _SLOT.pack_into(self._map, i * _SLOT.size, 0, 0, b"")
                    pid = 0
                if not pid:
                    if free is None:
                        free = i
                elif tenant == tenant_id and ae.rstrip(b"\x00") == key:
                    mine += 1
            if free is None or mine >= per_ae:
                return None
            _SLOT.pack_into(self._map, free * _SLOT.size, self._pid, tenant_id, key)
            return free

    def release(self, slot: int) -> None:
        """Free a slot taken by :meth:`claim` (a no-op once the table is closed)."""
        with self._exclusive():
            if not self._closed:
                _SLOT.pack_into(self._map, slot * _SLOT.size, 0, 0, b"")

    def in_use(self) -> int:
        """Slots taken, by every process."""
        with self._exclusive():
            if self._closed:
                return 0
            return sum(
                1 for i in range(self.slots) if _SLOT.unpack_from(self._map, i * _SLOT.size)[0]
            )

    @staticmethod
    def reset(path: Path) -> None:
        """Start a fresh table (before any process serves the port: no slot can be live)."""
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmap and close the file (slots still taken stay until freed or found stale)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._map.close()
            os.close(self._fd)
