"""Person Name (PN) normalisation for fuzzy matching (PS3.18 §8.3.4.1, PS3.4 C.2.2.2.1).

``fuzzymatching=true`` makes PN matching case- and accent-insensitive and lets a query value
match any name component (family, given, middle, ...) by prefix. The index stores
:func:`fuzzy_key` of each name; the query side normalises its value the same way.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\^=,\s]+")


def fold(text: str) -> str:
    """Upper-case ``text`` and strip accents (NFKD, combining marks removed)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def fuzzy_key(name: str | None) -> str | None:
    """The searchable form of a PN value: folded components separated by single spaces.

    The result starts and ends with a space so that ``LIKE '% JOH%'`` finds a component
    beginning with ``JOH``. ``None`` and empty names give ``None``.
    """
    if not name:
        return None
    words = [w for w in _SEPARATORS.split(fold(name)) if w]
    if not words:
        return None
    return " " + " ".join(words) + " "
