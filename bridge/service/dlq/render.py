"""Dead letters made safe to print: a payload is provider input, possibly hostile.

Control characters (the escape sequences a terminal would obey: ESC, CSI, OSC…), bidirectional
overrides and invalid UTF-8 never reach the terminal as they are; text is escaped (``\\x1b``),
binary is shown as base64, and everything is cut at a byte budget with the full size said.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from bridge.service.dlq.records import DeadLetterRecord

__all__ = ["safe_text", "payload_view", "line", "detail", "as_json"]

_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def safe_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character a terminal would interpret written as an escape."""
    table = _ESCAPES if not keep_newlines else {k: v for k, v in _ESCAPES.items() if k != 0x0A}
    return text.translate(table)


def payload_view(value: bytes, limit: int) -> tuple[str, str]:
    """``(kind, shown)``: ``text`` escaped, or ``base64`` for bytes that are not UTF-8; at most
    ``limit`` bytes of the payload, with the cut said."""
    head = value[:limit]
    try:
        kind, shown = "text", safe_text(head.decode("utf-8"))
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and len(value) > limit:  # a character cut by the budget
            kind, shown = "text", safe_text(head[: exc.start].decode("utf-8"))
        else:
            kind, shown = "base64", binascii.b2a_base64(head, newline=False).decode()
    if len(value) > limit:
        shown += f"… ({len(value):,} bytes, {limit:,} shown)"
    return kind, shown


def line(record: DeadLetterRecord, *, width: int = 80) -> str:
    """One record on one line: where, when, whose, why, and the head of the payload."""
    kind, preview = payload_view(record.value, width)
    replays = f" replays={record.replay_count}" if record.replay_count else ""
    fields = (
        f"{record.position:<10}",
        record.text("dlq_received_at") or "-",
        f"{safe_text(record.provider)}/{safe_text(record.channel)}{replays}",
        f'reason="{safe_text(record.reason)[:160]}"',
        f"raw={preview}" if kind == "text" else f"raw(base64)={preview}",
    )
    return "  ".join(fields)


def detail(record: DeadLetterRecord, *, limit: int) -> str:
    """Every header and the payload, for ``dlq show``."""
    kind, shown = payload_view(record.value, limit)
    out = [f"record {record.position} (timestamp {record.timestamp_ms}, {len(record.value):,} bytes)"]
    for name, value in record.headers.items():
        _, text = payload_view(value, 2000)
        out.append(f"  {safe_text(name)}: {text}")
    out.append(f"  payload ({kind}):")
    out.append("    " + shown)
    return "\n".join(out)


def as_json(record: DeadLetterRecord, *, limit: int) -> bytes:
    """One JSON object per record: headers as text, the payload exact in base64 (cut at ``limit``)
    plus an escaped preview."""
    _, preview = payload_view(record.value, min(limit, 200))
    document: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "provider": safe_text(record.provider),
        "channel": safe_text(record.channel),
        "reason": safe_text(record.reason),
        "replay_count": record.replay_count,
        "headers": {safe_text(name): safe_text(value.decode("utf-8", "backslashreplace")) for name, value in record.headers.items()},
        "payload_bytes": len(record.value),
        "payload_base64": base64.b64encode(record.value[:limit]).decode(),
        "payload_truncated": len(record.value) > limit,
        "payload_preview": preview,
    }
    return orjson.dumps(document)
