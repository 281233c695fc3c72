"""DIMSE command sets (PS3.7 §6.3, §9.3 and Annex E): group 0000, Implicit VR Little Endian.

A command set is a handful of elements of a fixed dictionary, always Implicit VR Little Endian
(PS3.7 §6.3.1), so it is decoded and encoded here directly, without a general data set parser:
a decoded command is a ``{tag: value}`` dict with integers for US/UL elements and stripped
strings for UI/AE/LO/SH ones.
"""

from __future__ import annotations

import struct
from typing import Final

# Command Field values (PS3.7 §E.1, Table E.1-1)
C_STORE_RQ: Final = 0x0001
C_STORE_RSP: Final = 0x8001
C_GET_RQ: Final = 0x0010
C_GET_RSP: Final = 0x8010
C_FIND_RQ: Final = 0x0020
C_FIND_RSP: Final = 0x8020
C_MOVE_RQ: Final = 0x0021
C_MOVE_RSP: Final = 0x8021
C_ECHO_RQ: Final = 0x0030
C_ECHO_RSP: Final = 0x8030
C_CANCEL_RQ: Final = 0x0FFF

# Command elements (PS3.7 Annex E)
AFFECTED_SOP_CLASS_UID: Final = 0x00000002
COMMAND_FIELD: Final = 0x00000100
MESSAGE_ID: Final = 0x00000110
MESSAGE_ID_BEING_RESPONDED_TO: Final = 0x00000120
MOVE_DESTINATION: Final = 0x00000600
PRIORITY: Final = 0x00000700
COMMAND_DATA_SET_TYPE: Final = 0x00000800
STATUS: Final = 0x00000900
ERROR_COMMENT: Final = 0x00000902
AFFECTED_SOP_INSTANCE_UID: Final = 0x00001000
REMAINING: Final = 0x00001020
COMPLETED: Final = 0x00001021
FAILED: Final = 0x00001022
WARNING: Final = 0x00001023
MOVE_ORIGINATOR_AE: Final = 0x00001030
MOVE_ORIGINATOR_MESSAGE_ID: Final = 0x00001031

#: Command Data Set Type (0000,0800) value meaning "no data set" (PS3.7 §E.1).
NO_DATA_SET: Final = 0x0101
HAS_DATA_SET: Final = 0x0000

_US: Final = frozenset(
    {
        COMMAND_FIELD,
        MESSAGE_ID,
        MESSAGE_ID_BEING_RESPONDED_TO,
        PRIORITY,
        COMMAND_DATA_SET_TYPE,
        STATUS,
        REMAINING,
        COMPLETED,
        FAILED,
        WARNING,
        MOVE_ORIGINATOR_MESSAGE_ID,
    }
)
_UI: Final = frozenset({AFFECTED_SOP_CLASS_UID, AFFECTED_SOP_INSTANCE_UID})
_ELEMENT = struct.Struct("<HHL")
#: Largest command set accepted (a real one is a few hundred bytes).
MAX_COMMAND_BYTES: Final = 64 * 1024

Command = dict[int, int | str]


class CommandError(ValueError):
    """A command set that cannot be decoded (PS3.7 §9.3)."""


def decode(raw: bytes) -> Command:
    """Decode an Implicit VR Little Endian command set (PS3.7 §6.3.1).

    Unknown elements are skipped; US elements of the wrong length are an error.

    Raises:
        CommandError: truncated or inconsistent encoding.
    """
    out: Command = {}
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 8 > end:
            raise CommandError("truncated command element")
        group, elem, length = _ELEMENT.unpack_from(raw, pos)
        pos += 8
        if pos + length > end:
            raise CommandError("command element overruns the command set")
        tag = (group << 16) | elem
        if group != 0x0000:
            raise CommandError("command set holds an element outside group 0000")
        if tag in _US:
            if length != 2:
                raise CommandError(f"command element ({group:04X},{elem:04X}) is not US")
            out[tag] = raw[pos] | (raw[pos + 1] << 8)
        elif tag != 0:
            value = raw[pos : pos + length]
            out[tag] = value.rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    if COMMAND_FIELD not in out:
        raise CommandError("command set without Command Field (0000,0100)")
    return out


def _value(tag: int, value: int | str) -> bytes:
    if tag in _US:
        return struct.pack("<H", int(value))
    raw = str(value).encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\x00" if tag in _UI else b" "
    return raw


def encode(fields: Command) -> bytes:
    """Encode a command set with its Command Group Length (0000,0000) (PS3.7 §E.1)."""
    body = bytearray()
    for tag in sorted(fields):
        if tag == 0:
            continue
        value = _value(tag, fields[tag])
        body += _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(value)) + value
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + bytes(body)
