"""The header vocabulary of the bridge's records: CloudEvents on events, ``dlq_*`` and Kafka
Connect's ``__connect.errors.*`` on dead letters.

Writers (the publisher) and readers (``transfer-bridge dlq``) share these names, so a header is
spelled in one place. The Connect names are those Kafka Connect's ``DeadLetterQueueReporter``
writes, so DLQ tooling built for Connect (UIs, alert rules, replay scripts) reads our dead letters too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DLQ_PROVIDER",
    "DLQ_CHANNEL",
    "DLQ_REASON",
    "DLQ_RECEIVED_AT",
    "DLQ_ACCOUNT",
    "REPLAY_COUNT",
    "CONNECT_PREFIX",
    "CONNECT_TOPIC",
    "CONNECT_EXCEPTION_CLASS",
    "CONNECT_EXCEPTION_MESSAGE",
    "MAX_REASON_BYTES",
    "header_bytes",
    "connect_headers",
    "exception_class_of",
    "header_map",
    "registry_schema_url",
]

DLQ_PROVIDER = "dlq_provider"
DLQ_CHANNEL = "dlq_channel"
DLQ_REASON = "dlq_reason"
DLQ_RECEIVED_AT = "dlq_received_at"
DLQ_ACCOUNT = "dlq_account"
REPLAY_COUNT = "dlq_replay_count"
"""How many times ``dlq replay`` tried this payload and it failed again (absent: never replayed)."""

CONNECT_PREFIX = "__connect.errors."
CONNECT_TOPIC = CONNECT_PREFIX + "topic"
CONNECT_CONNECTOR = CONNECT_PREFIX + "connector.name"
CONNECT_TASK = CONNECT_PREFIX + "task.id"
CONNECT_STAGE = CONNECT_PREFIX + "stage"
CONNECT_EXECUTING_CLASS = CONNECT_PREFIX + "class.name"
CONNECT_EXCEPTION_CLASS = CONNECT_PREFIX + "exception.class.name"
CONNECT_EXCEPTION_MESSAGE = CONNECT_PREFIX + "exception.message"

MAX_REASON_BYTES = 4000

_PARSER_FAILED = re.compile(r"^parser failed: ([A-Za-z_][A-Za-z0-9_.]*):")
_PARSE_ERROR = "bridge.contract.parsing.ParseError"


def header_bytes(text: str) -> bytes:
    """UTF-8, with what cannot be encoded (lone surrogates from a hostile payload) escaped, never raised."""
    return text.encode("utf-8", "backslashreplace")


def exception_class_of(reason: str) -> str:
    """The exception class a reason names (``parser failed: KeyError: …``), else the parsers' own
    ``ParseError``; Connect tooling groups dead letters by this header."""
    match = _PARSER_FAILED.match(reason)
    if match:
        return match.group(1)
    if reason.startswith("event too large for Kafka"):
        return "aiokafka.errors.MessageSizeTooLargeError"
    return _PARSE_ERROR


def connect_headers(provider: str, channel: str, reason: str, *, connector: str = "transfer-bridge") -> list[tuple[str, bytes]]:
    """Kafka Connect's dead-letter context headers for one payload.

    The payload came from a provider feed, not a Kafka topic: ``topic`` names it as
    ``<provider>/<channel>``, and Connect's ``partition`` / ``offset`` (written only for a consumed
    record) are left out. Values are UTF-8 strings, as Connect writes them."""
    stage = "KAFKA_PRODUCE" if reason.startswith("event too large for Kafka") else "VALUE_CONVERTER"
    return [
        (CONNECT_TOPIC, header_bytes(f"{provider}/{channel}")),
        (CONNECT_CONNECTOR, header_bytes(connector)),
        (CONNECT_TASK, b"0"),
        (CONNECT_STAGE, stage.encode()),
        (CONNECT_EXECUTING_CLASS, header_bytes(f"bridge.sources.{provider}")),
        (CONNECT_EXCEPTION_CLASS, header_bytes(exception_class_of(reason))),
        (CONNECT_EXCEPTION_MESSAGE, header_bytes(reason)[:MAX_REASON_BYTES]),
    ]


def header_map(headers: Iterable[tuple[str, bytes | None]]) -> Mapping[str, bytes]:
    """A record's headers by name (the last one wins, as Connect's ``lastWithName``)."""
    return {name: value or b"" for name, value in headers}


def registry_schema_url(registry_url: str, schema_id: int) -> str:
    """The registry's own address of a schema (``GET /schemas/ids/{id}``): CloudEvents' ``dataschema``
    for values in the registry wire format. Credentials written into the URL are left out: a header
    travels with every record."""
    parts = urlsplit(registry_url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, f"{parts.path.rstrip('/')}/schemas/ids/{schema_id}", "", ""))
