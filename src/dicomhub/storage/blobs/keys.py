"""Opaque blob keys.

A key is a random 128-bit identifier spread over two levels of folders, ``ab/cd/abcd...``. It
never contains a UID, a patient identifier or anything derived from them (pynetdicom #823 showed
what file names built from UIDs lead to), so a leaked listing reveals nothing.
"""

from __future__ import annotations

import re
import secrets
import threading

_KEY_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}$")
#: Keys a process puts into one random folder before it picks another.
FOLDER_KEYS = 256

_lock = threading.Lock()
_folder = ""
_folder_left = 0


def new_key() -> str:
    """Return a fresh random key such as ``3f/a9/<32 hex>``."""
    return new_keys(1)[0]


def new_keys(n: int) -> list[str]:
    """Return ``n`` fresh random keys that share one random folder.

    Blobs written together then need one directory fsync instead of one each. Consecutive calls
    in a process share the folder too, up to :data:`FOLDER_KEYS` keys: a new folder costs a
    ``mkdir`` and two more directory fsyncs, which most batches then skip. The folder is still
    random, so keys reveal nothing and spread evenly over the 65,536 folders.
    """
    global _folder, _folder_left
    with _lock:
        if _folder_left < n:
            _folder, _folder_left = secrets.token_hex(2), max(FOLDER_KEYS, n)
        _folder_left -= n
        folder = _folder
    return [f"{folder[:2]}/{folder[2:]}/{secrets.token_hex(16)}" for _ in range(n)]


def is_key(value: str) -> bool:
    """Whether ``value`` has the shape of a key made by :func:`new_key`."""
    return bool(_KEY_RE.match(value))
