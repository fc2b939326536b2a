"""The Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, then the payload.

A JSON document never starts with a NUL byte, so a reader can tell both kinds of value apart
from the first byte alone; that is what lets one consumer read topics produced before and after
a registry was configured.
"""

from __future__ import annotations

import struct

__all__ = ["MAGIC_BYTE", "HEADER_SIZE", "WireFormatError", "prefix", "encode", "decode", "is_wire_format"]

MAGIC_BYTE = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">BI")
_MAX_ID = 2**31 - 1  # Java clients read the id as a signed int


class WireFormatError(ValueError):
    """The bytes are neither plain JSON nor a well-formed wire-format value."""


def prefix(schema_id: int) -> bytes:
    """The 5 header bytes for ``schema_id``; producers compute this once and reuse it."""
    if not 0 <= schema_id <= _MAX_ID:
        raise WireFormatError(f"schema id {schema_id} is outside 0..{_MAX_ID}")
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def encode(schema_id: int, payload: bytes) -> bytes:
    return prefix(schema_id) + payload


def is_wire_format(value: bytes) -> bool:
    return value[:1] == b"\x00"


def decode(value: bytes) -> tuple[int | None, bytes]:
    """``(schema_id, payload)``; ``schema_id`` is None for a plain JSON value."""
    if not value:
        raise WireFormatError("empty value")
    first = value[0]
    if first == MAGIC_BYTE:
        if len(value) < HEADER_SIZE:
            raise WireFormatError(f"wire-format value of {len(value)} bytes has no room for a schema id")
        _, schema_id = _HEADER.unpack_from(value)
        return schema_id, value[HEADER_SIZE:]
    if first in b"{[ \t\r\n":
        return None, value
    raise WireFormatError(f"unknown leading byte 0x{first:02x}: neither JSON nor wire format (magic byte 0)")
