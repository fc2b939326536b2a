"""Ripio source configuration: one stream connection per account, every interval tunable.

The service shell nests ``RipioConfig`` under ``BridgeSettings`` (``BRIDGE_RIPIO__…``). Credentials
are ``SecretStr`` so they print as ``**********`` in reprs, validation errors and logs; only
``bridge.sources.ripio.auth`` reads their value.

What the provider documentation leaves open (NOTES: "unconfirmed") is a setting here, with the
value public client code uses as default: the stream URL, the keepalive, whether the signature
covers the query string, and the withdrawals listing path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.ingest.settings import StreamSettings
from bridge.sources.ripio.auth import MAX_TOLERANCE_MS
from bridge.sources.ripio.parse import TOPICS

__all__ = [
    "RipioAccount",
    "RipioConfig",
    "PRODUCTION_REST_URL",
    "PRODUCTION_WS_URL",
    "TICKET_PATH",
    "DEPOSITS_PATH",
    "WITHDRAWALS_PATH",
]

PRODUCTION_REST_URL = "https://api.ripio.com"
PRODUCTION_WS_URL = "wss://ws.ripiotrade.co"
"""Unconfirmed: what public client code connects to."""
TICKET_PATH = "/trade/ticket"
DEPOSITS_PATH = "/trade/deposits"
WITHDRAWALS_PATH = "/trade/withdrawals"
"""Unconfirmed: the deposits listing's sibling."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RipioAccount(_Section):
    """One API token and its secret key (Ripio Trade → API credentials)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    api_token: SecretStr
    api_secret: SecretStr
    user_id: str | None = Field(
        default=None, description="account id for backfilled rows (listings carry none); learnt from pushes when unset"
    )
    currencies: tuple[str, ...] | None = Field(default=None, description="backfill only these currency codes")
    enabled: bool = True

    @field_validator("currencies", mode="before")
    @classmethod
    def _currencies(cls, value: Any) -> Any:
        """Accept ``"BTC"``, ``"BTC,ETH"`` or a list; an empty filter means every currency."""
        if value is None:
            return None
        if isinstance(value, str):
            value = value.split(",")
        cleaned = tuple(str(part).strip().upper() for part in value if str(part).strip())
        return cleaned or None

    @field_validator("api_token", "api_secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class RipioConfig(StreamSettings):
    rest_url: str = PRODUCTION_REST_URL
    ws_url: str = PRODUCTION_WS_URL
    topics: tuple[str, ...] = ("deposit", "withdrawal")
    accounts: list[RipioAccount] = Field(default_factory=list)

    # REST signing
    ticket_path: str = TICKET_PATH
    deposits_path: str = DEPOSITS_PATH
    withdrawals_path: str = WITHDRAWALS_PATH
    timestamp_tolerance_ms: int | None = Field(
        default=None, ge=1, le=MAX_TOLERANCE_MS, description="sent as Timestamp-tolerance; None = server default (5000)"
    )
    sign_query: bool = Field(default=False, description="sign path?query instead of the bare path (unconfirmed)")

    # connection life
    ping_interval: float | None = Field(
        default=10.0, gt=0, description='send {"method":"ping"} this often; None = never (unconfirmed need)'
    )
    liveness_timeout: float | None = Field(
        default=None, gt=0, description="reconnect when nothing at all arrived for this long; None = off"
    )
    ws_ping_interval: float | None = Field(default=20.0, gt=0, description="WebSocket protocol ping; None = off")
    ws_ping_timeout: float = Field(default=20.0, gt=0)
    handshake_timeout: float = Field(default=10.0, gt=0, description="ticket request + open + subscribe")
    subscribe_confirm_timeout: float = Field(
        default=2.0, ge=0, description="wait this long for a welcome, data or error after subscribing"
    )
    sequence_start: int | None = Field(
        default=1,
        ge=0,
        description="id of a topic's first message on a new connection (a higher one is a gap); "
        "None = take the first id as it comes, for ids that continue across connections (unconfirmed)",
    )
    ticket_rejections_before_config_error: int = Field(
        default=3, ge=1, description="consecutive refused tickets on subscribe that mark a configuration error"
    )

    # gap backfill
    backfill_page_size: int = Field(default=200, ge=1, le=200)
    rest_rate_per_second: float = Field(default=1.0, gt=0, description="per account; Ripio allows 1 (3.5 verified)")
    rest_retry_initial: float = Field(default=0.5, gt=0, description="first retry pause; doubles up to 8 s")

    @field_validator("topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        return tuple(str(part).strip() for part in value if str(part).strip())

    @field_validator("topics")
    @classmethod
    def _known_topics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [topic for topic in value if topic not in TOPICS]
        if unknown or not value:
            raise ValueError(f"topics must be a non-empty subset of {sorted(TOPICS)}, got {list(value)}")
        return tuple(dict.fromkeys(value))

    @field_validator("ticket_path", "deposits_path", "withdrawals_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    def listing_path(self, topic: str) -> str:
        return self.deposits_path if topic == "deposit" else self.withdrawals_path
