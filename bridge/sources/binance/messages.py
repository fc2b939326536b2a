"""Binance's wire vocabulary for the capital history endpoints: paths, weights, error codes, the
error envelope and the rate-limit headers (``shared/providers/binance-capital-history.md`` §1–2).

Pure (no I/O, no clock): the REST client reads bodies through ``rows_of`` and ``server_time_of``,
which raise ``BinanceApiError`` for an error envelope, so the engine can react by code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.contract.parsing import provider_text

__all__ = [
    "DEPOSIT_PATH",
    "WITHDRAWAL_PATH",
    "SUB_DEPOSIT_PATH",
    "LOCALENTITY_WITHDRAWAL_PATH",
    "TIME_PATH",
    "ACCOUNT_PATH",
    "DEPOSIT_CHANNEL",
    "WITHDRAWAL_CHANNEL",
    "SUB_DEPOSIT_CHANNEL",
    "LOCALENTITY_WITHDRAWAL_CHANNEL",
    "WITHDRAWAL_CHANNELS",
    "CHANNEL_OF",
    "Endpoint",
    "ENDPOINTS",
    "Scope",
    "INVALID_TIMESTAMP",
    "INVALID_SIGNATURE",
    "TOO_MANY_REQUESTS",
    "CONFIGURATION_CODES",
    "REQUEST_CODES",
    "TRANSIENT_CODES",
    "BinanceApiError",
    "WeightHeader",
    "weight_headers",
    "rows_of",
    "server_time_of",
    "uid_of",
]

DEPOSIT_PATH = "/sapi/v1/capital/deposit/hisrec"
WITHDRAWAL_PATH = "/sapi/v1/capital/withdraw/history"
SUB_DEPOSIT_PATH = "/sapi/v1/capital/deposit/subHisrec"
LOCALENTITY_WITHDRAWAL_PATH = "/sapi/v1/localentity/withdraw/history"
"""Travel-rule local entities' withdrawal history (v1: v2 may miss ``capital/withdraw/apply``
withdrawals), read instead of the capital history by an account with ``poll_localentity``."""
TIME_PATH = "/api/v3/time"
ACCOUNT_PATH = "/api/v3/account"

DEPOSIT_CHANNEL = "capital/deposit/hisrec"
WITHDRAWAL_CHANNEL = "capital/withdraw/history"
SUB_DEPOSIT_CHANNEL = "capital/deposit/subHisrec"
LOCALENTITY_WITHDRAWAL_CHANNEL = "localentity/withdraw/history"
"""``source.channel`` of an event: the endpoint path it was read from (contract 1.1, Binance)."""
WITHDRAWAL_CHANNELS = frozenset({WITHDRAWAL_CHANNEL, LOCALENTITY_WITHDRAWAL_CHANNEL})
CHANNEL_OF = {
    DEPOSIT_PATH: DEPOSIT_CHANNEL,
    WITHDRAWAL_PATH: WITHDRAWAL_CHANNEL,
    SUB_DEPOSIT_PATH: SUB_DEPOSIT_CHANNEL,
    LOCALENTITY_WITHDRAWAL_PATH: LOCALENTITY_WITHDRAWAL_CHANNEL,
}

Scope = Literal["ip", "uid", "api"]
"""Which minute budget a request draws on: SAPI per IP, SAPI per UID, or the ``/api`` IP weight."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A request's price: its weight and the budget it is charged to (the weight is a setting for
    withdrawals, whose documented price and meter changed over time)."""

    path: str
    weight: int
    scope: Scope
    signed: bool = True


ENDPOINTS: Mapping[str, Endpoint] = {
    DEPOSIT_PATH: Endpoint(DEPOSIT_PATH, 1, "ip"),
    SUB_DEPOSIT_PATH: Endpoint(SUB_DEPOSIT_PATH, 1, "ip"),
    WITHDRAWAL_PATH: Endpoint(WITHDRAWAL_PATH, 18_000, "uid"),
    LOCALENTITY_WITHDRAWAL_PATH: Endpoint(LOCALENTITY_WITHDRAWAL_PATH, 18_000, "uid"),
    TIME_PATH: Endpoint(TIME_PATH, 1, "api", signed=False),
    ACCOUNT_PATH: Endpoint(ACCOUNT_PATH, 20, "api"),
}

INVALID_TIMESTAMP = -1021
INVALID_SIGNATURE = -1022
TOO_MANY_REQUESTS = -1003

CONFIGURATION_CODES: Mapping[int, str] = {
    -1002: "not authorized for this request",
    -1022: "signature not valid (secret, key type or payload bytes)",
    -2014: "API key format invalid",
    -2015: "invalid API key, IP not whitelisted, or missing permission",
}
"""Credentials refused: an operator has to act; retrying fast cannot help."""

REQUEST_CODES: Mapping[int, str] = {
    -1100: "illegal characters in a parameter",
    -1101: "too many parameters",
    -1102: "mandatory parameter missing or malformed",
    -1103: "unknown parameter",
    -1104: "not all parameters were read",
    -1105: "empty parameter",
    -1106: "parameter sent when not required",
    -1127: "window too wide",
    -1128: "invalid combination of optional parameters",
    -1130: "invalid parameter value",
    -1131: "recvWindow above 60000",
}
"""Our request is wrong (a bug or a setting such as ``recv_window_ms``): never retried fast."""

TRANSIENT_CODES = frozenset({-1000, -1001, -1006, -1007, -1008})
"""Binance-side trouble: retried with backoff (a read has no side effect)."""


class BinanceApiError(Exception):
    """An error answer: ``{"code": <negative int>, "msg": …}`` or a bare HTTP error status."""

    def __init__(self, http_status: int, code: int | None, msg: str, retry_after: float | None = None):
        described = CONFIGURATION_CODES.get(code or 0) or REQUEST_CODES.get(code or 0)
        text = f"Binance error {code if code is not None else '-'} (HTTP {http_status}): {msg}"
        super().__init__(text + (f" [{described}]" if described and described not in msg else ""))
        self.http_status = http_status
        self.code = code
        self.msg = msg
        self.retry_after = retry_after

    @property
    def is_rate_limit(self) -> bool:
        """429 (limit hit), 418 (IP banned after ignoring 429s) or -1003."""
        return self.http_status in (418, 429) or self.code == TOO_MANY_REQUESTS

    @property
    def is_ban(self) -> bool:
        return self.http_status == 418

    @property
    def is_timestamp(self) -> bool:
        return self.code == INVALID_TIMESTAMP

    @property
    def is_configuration_error(self) -> bool:
        return self.code in CONFIGURATION_CODES or self.http_status == 401

    @property
    def is_request_error(self) -> bool:
        return self.code in REQUEST_CODES

    @property
    def is_transient(self) -> bool:
        return self.code in TRANSIENT_CODES or self.http_status >= 500


@dataclass(frozen=True, slots=True)
class WeightHeader:
    """One ``X-SAPI-USED-<IP|UID>-WEIGHT-<n><S|M|H|D>`` (or ``X-MBX-USED-WEIGHT-1M``) value."""

    scope: Scope
    interval: str
    used: int


_WEIGHT_HEADER = re.compile(r"^x-(?:sapi-used-(ip|uid)-weight|mbx-used-weight)-(\d+[smhd])$", re.IGNORECASE)


def weight_headers(headers: Mapping[str, str]) -> list[WeightHeader]:
    """Every weight header of a response. Binance's pages disagree on which header the withdrawal
    history sends (UID or IP, per second or per minute), so all of them are read."""
    found: list[WeightHeader] = []
    for name, value in headers.items():
        match = _WEIGHT_HEADER.match(name)
        if match is None or not value.strip().isdigit():
            continue
        scope: Scope = "api" if match.group(1) is None else ("ip" if match.group(1).lower() == "ip" else "uid")
        found.append(WeightHeader(scope, match.group(2).lower(), int(value)))
    return found


def _error(body: Any, http_status: int) -> BinanceApiError:
    if isinstance(body, Mapping) and "code" in body:
        raw = body.get("code")
        code = int(raw) if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) < 10**9 else None
        return BinanceApiError(http_status, code, provider_text(body.get("msg", ""), 300))
    return BinanceApiError(http_status, None, f"HTTP {http_status} without an error envelope")


def rows_of(body: Any, http_status: int) -> Any:
    """A history page's body (a bare JSON array, handed to the parser whatever it is), or the
    ``BinanceApiError`` its error envelope means."""
    if http_status >= 400 or (isinstance(body, Mapping) and "code" in body and body.get("code") not in (0, 200)):
        raise _error(body, http_status)
    return body


def server_time_of(body: Any, http_status: int) -> int:
    """``GET /api/v3/time`` → ``serverTime`` in epoch ms."""
    if http_status >= 400:
        raise _error(body, http_status)
    value = body.get("serverTime") if isinstance(body, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BinanceApiError(http_status, None, "time answer without an integer 'serverTime'")
    return value


def uid_of(body: Any, http_status: int) -> str | None:
    """``GET /api/v3/account`` → the key's ``uid`` (rows carry none), or None."""
    if http_status >= 400:
        raise _error(body, http_status)
    value = body.get("uid") if isinstance(body, Mapping) else None
    return str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value) else None
