"""Unique Identifiers (UIDs) as defined in PS3.5 §9.1.

A UID is a string of at most 64 characters made of numeric components separated by ``.``.
Each component is a run of digits; no component may be empty and the UID may not end with a dot.

PS3.5 §9.1 also says a component shall not start with ``0`` unless it is the single digit ``0``.
Real archives contain many UIDs that violate that rule (e.g. ``1.2.840.0113654...``) and they
must stay retrievable, so leading zeros are *accepted* here on purpose.
"""

from __future__ import annotations

import re

from dicomhub.errors import InvalidInput

__all__ = ["MAX_UID_LENGTH", "is_valid_uid", "validate_uid"]

#: Maximum length of a UID value (PS3.5 §9.1, VR UI in §6.2).
MAX_UID_LENGTH = 64

# Digits-only components separated by single dots; leading zeros tolerated (see module doc).
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_valid_uid(s: str) -> bool:
    """Return whether ``s`` is a syntactically valid UID (PS3.5 §9.1).

    Args:
        s: The candidate UID, without trailing NUL padding.

    Returns:
        ``True`` if ``s`` has 1..64 characters, only digits and dots, no empty component and no
        trailing dot. Components with leading zeros are accepted (see the module docstring).
    """
    return 0 < len(s) <= MAX_UID_LENGTH and _UID_RE.fullmatch(s) is not None


def validate_uid(s: str, what: str) -> str:
    """Validate a UID taken from a request parameter (PS3.5 §9.1).

    Args:
        s: The candidate UID.
        what: What the UID names, used in the error reason (e.g. ``"StudyInstanceUID"``).

    Returns:
        ``s`` unchanged when valid.

    Raises:
        InvalidInput: If ``s`` is not a valid UID.
    """
    if not is_valid_uid(s):
        shown = s if len(s) <= MAX_UID_LENGTH + 8 else s[: MAX_UID_LENGTH + 8] + "..."
        raise InvalidInput(f"invalid {what}: {shown!r} is not a valid UID (PS3.5 §9.1)")
    return s
