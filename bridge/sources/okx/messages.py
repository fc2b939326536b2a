"""OKX's own frames, in OKX's vocabulary: requests we send and control events we receive.

Pure (no I/O, no clock). Data pushes are left to ``parse.py``; this module only tells them apart
from the control events (``login``, ``subscribe``, ``error``, ``notice``, …) and says what an
error code means, so the transport can react by code instead of by message text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.contract.parsing import provider_text
from bridge.sources.okx.parse import DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL

__all__ = [
    "PING",
    "PONG",
    "CHANNELS",
    "DEPOSIT_HISTORY_PATH",
    "WITHDRAWAL_HISTORY_PATH",
    "ACCOUNT_CONFIG_PATH",
    "HISTORY_PATH",
    "HISTORY_ID_FIELD",
    "SERVICE_UPGRADE_NOTICE",
    "WS_ERRORS",
    "CONFIGURATION_ERROR_CODES",
    "INVALID_REQUEST_CODES",
    "CONFIGURATION_CLOSE_CODES",
    "REST_RATE_LIMIT_CODE",
    "REST_CONFIGURATION_CODES",
    "LoginAck",
    "SubscribeAck",
    "ErrorEvent",
    "Notice",
    "OtherEvent",
    "Control",
    "login_request",
    "subscribe_request",
    "subscription_args",
    "classify",
    "RestError",
    "history_rows",
]

PING = "ping"
PONG = "pong"
CHANNELS = (DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL)

DEPOSIT_HISTORY_PATH = "/api/v5/asset/deposit-history"
WITHDRAWAL_HISTORY_PATH = "/api/v5/asset/withdrawal-history"
ACCOUNT_CONFIG_PATH = "/api/v5/account/config"
HISTORY_PATH = {DEPOSIT_CHANNEL: DEPOSIT_HISTORY_PATH, WITHDRAWAL_CHANNEL: WITHDRAWAL_HISTORY_PATH}
HISTORY_ID_FIELD = {DEPOSIT_CHANNEL: "depId", WITHDRAWAL_CHANNEL: "wdId"}

SERVICE_UPGRADE_NOTICE = "64008"

WS_ERRORS: Mapping[str, str] = {
    "60004": "invalid timestamp",
    "60005": "invalid apiKey",
    "60006": "timestamp expired",
    "60007": "invalid sign",
    "60008": "endpoint does not support this channel",
    "60009": "login failure",
    "60011": "please log in",
    "60012": "invalid request",
    "60013": "invalid args",
    "60014": "requests too frequent",
    "60018": "wrong URL or channel",
    "60024": "wrong passphrase",
    "60031": "repeated login not allowed",
    "60032": "API key does not exist",
    "63999": "login internal error",
    "64001": "channel endpoint moved",
    "64002": "channel endpoint moved",
    "64007": "internal error",
    "64008": "connection will close soon for a service upgrade",
}

CONFIGURATION_ERROR_CODES = frozenset({"60004", "60005", "60006", "60007", "60009", "60024", "60032"})
"""Credentials or clock refused: retrying fast cannot help, an operator has to act."""

INVALID_REQUEST_CODES = frozenset({"60008", "60012", "60013", "60018", "64001", "64002"})
"""Our request (URL, channel, args) is wrong: also needs an operator, never a fast retry."""

CONFIGURATION_CLOSE_CODES = {4001: "login failed", 4007: "API key updated or deleted"}

REST_RATE_LIMIT_CODE = "50011"
REST_CONFIGURATION_CODES: Mapping[str, str] = {
    "50102": "timestamp expired (check the clock)",
    "50105": "invalid passphrase",
    "50111": "invalid API key",
    "50112": "invalid timestamp",
    "50113": "invalid sign",
    "50114": "invalid authorization",
}


@dataclass(frozen=True, slots=True)
class LoginAck:
    conn_id: str | None


@dataclass(frozen=True, slots=True)
class SubscribeAck:
    channel: str
    ccy: str | None
    conn_id: str | None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str
    msg: str
    conn_id: str | None
    request_id: str | None

    @property
    def meaning(self) -> str:
        return WS_ERRORS.get(self.code, "undocumented error")

    @property
    def is_configuration_error(self) -> bool:
        return self.code in CONFIGURATION_ERROR_CODES

    @property
    def is_invalid_request(self) -> bool:
        return self.code in INVALID_REQUEST_CODES

    def describe(self) -> str:
        return f"OKX error {self.code} ({self.meaning}): {self.msg}"


@dataclass(frozen=True, slots=True)
class Notice:
    code: str
    msg: str

    @property
    def is_service_upgrade(self) -> bool:
        return self.code == SERVICE_UPGRADE_NOTICE


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """Events we acknowledge and ignore (``unsubscribe``, ``channel-conn-count``, …)."""

    event: str
    body: Mapping[str, Any]


Control = LoginAck | SubscribeAck | ErrorEvent | Notice | OtherEvent


def login_request(args: Mapping[str, str]) -> dict[str, Any]:
    return {"op": "login", "args": [dict(args)]}


def subscribe_request(request_id: str, args: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    return {"id": request_id, "op": "subscribe", "args": [dict(arg) for arg in args]}


def subscription_args(
    deposit_ccy: Sequence[str] | None, withdrawal_ccy: Sequence[str] | None
) -> list[dict[str, str]]:
    """One argument per channel, or one per currency when the channel is filtered."""
    args: list[dict[str, str]] = []
    for channel, currencies in ((DEPOSIT_CHANNEL, deposit_ccy), (WITHDRAWAL_CHANNEL, withdrawal_ccy)):
        if not currencies:
            args.append({"channel": channel})
        else:
            args.extend({"channel": channel, "ccy": ccy} for ccy in currencies)
    return args


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def classify(message: Mapping[str, Any]) -> Control | None:
    """A control event, or None when the frame should be a data push."""
    event = message.get("event")
    if event is None:
        return None
    conn_id = _text(message.get("connId"))
    code = provider_text(message.get("code", ""), 60)
    if event == "login" and code in ("0", ""):
        return LoginAck(conn_id)
    if event == "subscribe":
        arg = message.get("arg")
        if not isinstance(arg, Mapping):
            arg = {}
        return SubscribeAck(provider_text(arg.get("channel", ""), 100), _text(arg.get("ccy")), conn_id)
    if event in ("error", "login"):
        return ErrorEvent(code or "?", provider_text(message.get("msg", ""), 300), conn_id, _text(message.get("id")))
    if event == "notice":
        return Notice(code, provider_text(message.get("msg", ""), 300))
    return OtherEvent(provider_text(event, 60), message)


class RestError(Exception):
    """A REST call answered with a non-zero ``code`` (or no envelope at all)."""

    def __init__(self, code: str, msg: str, http_status: int):
        super().__init__(f"OKX REST error {code} (HTTP {http_status}): {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    @property
    def is_rate_limit(self) -> bool:
        return self.code == REST_RATE_LIMIT_CODE or self.http_status == 429

    @property
    def is_configuration_error(self) -> bool:
        return self.code in REST_CONFIGURATION_CODES or self.http_status in (401, 403)


def history_rows(body: Any, http_status: int) -> list[Any]:
    """``{"code": "0", "msg": "", "data": [...]}`` → the rows; anything else raises ``RestError``."""
    if not isinstance(body, Mapping):
        raise RestError("?", f"response is not a JSON object but {type(body).__name__}", http_status)
    code = str(body.get("code", "?"))
    if code != "0" or http_status >= 400:
        raise RestError(code, str(body.get("msg", ""))[:200], http_status)
    data = body.get("data")
    if not isinstance(data, list):
        raise RestError(code, f"'data' is not a list but {type(data).__name__}", http_status)
    return data
