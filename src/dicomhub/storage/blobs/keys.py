"""Opaque blob keys.

A key is a random 128-bit identifier spread over two levels of folders, ``ab/cd/abcd...``. It
never contains a UID, a patient identifier or anything derived from them (pynetdicom #823 showed
what file names built from UIDs lead to), so a leaked listing reveals nothing.
"""

from __future__ import annotations

import re
import secrets

_KEY_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}$")


def new_key() -> str:
    """Return a fresh random key such as ``3f/a9/3fa9...``."""
    token = secrets.token_hex(16)
    return f"{token[:2]}/{token[2:4]}/{token}"


def is_key(value: str) -> bool:
    """Whether ``value`` has the shape of a key made by :func:`new_key`."""
    return bool(_KEY_RE.match(value))
