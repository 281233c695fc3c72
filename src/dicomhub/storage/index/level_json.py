r"""The stored text of a level's DICOM JSON (``patient.attrs``, ``study.attrs``, ``series.attrs``).

QIDO-RS and C-FIND results are mostly the attributes of the patient, study and series rows
(PS3.18 §10.6.3.3), so the search service builds each result by splicing stored text instead of
parsing and re-serialising JSON per result. The stored text is a DICOM JSON object (PS3.18
§F.2) whose members are separated by ``",\n"``::

    {
    "00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^John"}]},
    "00100020":{"vr":"LO","Value":["P1"]}
    }

It is still JSON (whitespace between members is allowed), and a member never contains a raw
newline (the serialiser escapes control characters inside strings), so splitting at ``",\n"``
yields each member's exact text, ``"TTTTTTTT":{...}``, with its tag at ``[1:9]``.

Rows written before this form (compact JSON, ``{"0010...``) are read through :func:`members`
too: they are parsed and each member re-serialised, which gives the same text, only slower.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["EMPTY", "encode", "member", "members"]

EMPTY: Final = "{}"
_HEAD: Final = "{\n"
_SEP: Final = ",\n"
_TAIL: Final = "\n}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def member(tag: str, value: Any) -> str:
    """One member's text, ``"TTTTTTTT":{...}``, as :func:`encode` writes it."""
    return f'"{tag}":{_dumps(value)}'


def encode(attrs: Mapping[str, Any]) -> str:
    """The stored text of a level's DICOM JSON (tag -> attribute object)."""
    if not attrs:
        return EMPTY
    return _HEAD + _SEP.join(member(tag, value) for tag, value in attrs.items()) + _TAIL


def members(text: str | None) -> list[str]:
    """Each member's text of a stored level JSON (either form; ``None`` or empty: none)."""
    if not text:
        return []
    if text.startswith(_HEAD):
        return text[2:-2].split(_SEP)
    data = json.loads(text)  # the compact form of rows written before this one
    if not isinstance(data, dict):
        return []
    return [member(tag, value) for tag, value in data.items()]
