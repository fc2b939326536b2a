"""Ripio's own frames and REST envelopes, in Ripio's vocabulary — pure (no I/O, no clock).

What we send on the stream (``subscribe`` with a ticket, ``ping``), what the stream sends besides
transfer messages (welcome ``id: -1``, error envelopes, pongs, acknowledgements), the REST
envelope ``{"error_code", "message", "data"}`` of the ticket and listing endpoints. (The per-topic
message ``id`` sequence, whose jumps are gaps, is tracked by the engine: ``bridge.ingest.sequence``.)

Transfer messages themselves are ``parse.py``'s business; ``classify`` only says a frame is not one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.contract.parsing import provider_text
from bridge.sources.ripio.parse import TOPICS, WELCOME_ID

__all__ = [
    "TOPICS",
    "WELCOME_ID",
    "PING",
    "LISTING_KEY",
    "REST_ERRORS",
    "RATE_LIMIT_CODE",
    "Welcome",
    "StreamError",
    "Pong",
    "OtherControl",
    "Control",
    "subscribe_request",
    "classify",
    "RestError",
    "ticket_from",
    "ListingPage",
    "listing_page",
]

PING: Mapping[str, Any] = {"method": "ping"}
"""Keepalive public clients send every few seconds (NOTES; whether Ripio needs it is unconfirmed)."""

LISTING_KEY = {"deposit": "deposits", "withdrawal": "withdrawals"}
"""Where a listing response keeps its rows, by topic."""

REST_ERRORS: Mapping[int, str] = {
    40000: "invalid parameters",
    40100: "not authorized or blocked token",
    40300: "forbidden access",
    40400: "not found",
    42900: "requests limit reached",
    50000: "internal server error",
    50001: "error to get data",
    50002: "external communication error",
    50003: "internal communication error",
    503: "maintenance in course",
}

RATE_LIMIT_CODE = 42900


@dataclass(frozen=True, slots=True)
class Welcome:
    """``id: -1``: sent when a subscription starts; carries no transfer."""

    topic: str | None


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error envelope on the stream, e.g. a refused ticket."""

    code: Any
    message: str

    def describe(self) -> str:
        return f"Ripio error {self.code}: {self.message}".strip()


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to our ``ping`` (its exact shape is unconfirmed: any ``pong`` marker counts)."""


@dataclass(frozen=True, slots=True)
class OtherControl:
    """A ``method`` frame without a body (acknowledgements and the like): logged, not published."""

    method: str


Control = Welcome | StreamError | Pong | OtherControl


def subscribe_request(topics: Sequence[str], ticket: str) -> dict[str, Any]:
    """Contains the ticket, a short-lived credential: never log it."""
    return {"method": "subscribe", "topics": list(topics), "ticket": ticket}


def _is_pong(message: Mapping[str, Any]) -> bool:
    return any(
        isinstance(message.get(name), str) and message[name].lower() == "pong"
        for name in ("method", "type", "message", "event", "result")
    ) or "pong" in message


def classify(message: Mapping[str, Any]) -> Control | None:
    """A control frame, or None when the frame should be a transfer message (→ ``parse``)."""
    if message.get("id") == WELCOME_ID and not isinstance(message.get("id"), bool):
        topic = message.get("topic")
        return Welcome(topic if isinstance(topic, str) else None)
    if message.get("error_code") is not None or (message.get("error") not in (None, False) and "body" not in message):
        code = message.get("error_code", message.get("error"))
        return StreamError(provider_text(code, 60), provider_text(message.get("message") or "", 300))
    if "body" in message or "topic" in message:
        return None
    if _is_pong(message):
        return Pong()
    method = message.get("method")
    if isinstance(method, str):
        return OtherControl(method[:40])
    return None


class RestError(Exception):
    """A REST call answered with an error envelope or an HTTP error status."""

    def __init__(self, http_status: int, code: Any, message: str):
        meaning = REST_ERRORS.get(code) if isinstance(code, int) else None
        detail = f"error {code}" + (f" ({meaning})" if meaning else "") if code is not None else "no error code"
        super().__init__(f"HTTP {http_status}, {detail}: {message}".rstrip(": "))
        self.http_status = http_status
        self.code = code
        self.message = message

    @property
    def is_rate_limit(self) -> bool:
        return self.http_status == 429 or self.code == RATE_LIMIT_CODE

    @property
    def is_configuration_error(self) -> bool:
        """Credentials, signature, clock or request refused: an operator has to act."""
        return not self.is_rate_limit and 400 <= self.http_status < 500 and self.http_status not in (408, 409)

    @property
    def is_transient(self) -> bool:
        return self.is_rate_limit or self.http_status >= 500 or self.http_status in (408, 409)


def _envelope(body: Any, http_status: int) -> Any:
    """``data`` of a successful envelope; raises ``RestError`` otherwise."""
    if not isinstance(body, Mapping):
        raise RestError(http_status, None, f"response is not a JSON object but {type(body).__name__}")
    if http_status >= 400 or body.get("error_code") is not None:
        return_code = body.get("error_code")
        raise RestError(http_status, return_code, str(body.get("message") or "")[:300])
    return body.get("data", body)


def ticket_from(body: Any, http_status: int) -> str:
    """``{"message": null, "data": {"ticket": "<uuid>"}}`` → the ticket."""
    data = _envelope(body, http_status)
    ticket = data.get("ticket") if isinstance(data, Mapping) else None
    if not isinstance(ticket, str) or not ticket:
        raise RestError(http_status, None, "response carries no ticket")
    return ticket


@dataclass(frozen=True, slots=True)
class ListingPage:
    rows: list[Any]
    next_cursor: str | None = None
    """``nc``: pass it back as ``c`` for the next page (cursor paging)."""
    current_page: int | None = None
    total_pages: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def next_page_number(self) -> int | None:
        """Page-number paging, for servers without a cursor."""
        if self.current_page is None or self.total_pages is None or self.current_page >= self.total_pages:
            return None
        return self.current_page + 1


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def listing_page(topic: str, body: Any, http_status: int) -> ListingPage:
    """``{"data": {"deposits": [...], "pagination": {...}, "nc": "..."}}`` (or the same without the
    ``data`` envelope) → rows and where the next page is."""
    data = _envelope(body, http_status)
    if not isinstance(data, Mapping):
        raise RestError(http_status, None, f"'data' is not an object but {type(data).__name__}")
    key = LISTING_KEY[topic]
    rows = data.get(key)
    if not isinstance(rows, list):
        raise RestError(http_status, None, f"{key!r} is not a list but {type(rows).__name__}")
    pagination = data.get("pagination")
    if not isinstance(pagination, Mapping):
        pagination = {}
    cursor = data.get("nc")
    return ListingPage(
        rows=rows,
        next_cursor=cursor if isinstance(cursor, str) and cursor else None,
        current_page=_int(pagination.get("current_page")),
        total_pages=_int(pagination.get("total_pages")),
    )
