"""OKX source configuration: one connection per account, every interval tunable.

The service shell nests ``OkxConfig`` under ``BridgeSettings`` (``BRIDGE_OKX__…``). Credentials are
``SecretStr`` so they print as ``**********`` in reprs, validation errors and logs; only
``bridge.sources.okx.auth`` ever reads their value.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.ingest.settings import StreamSettings

__all__ = ["OkxAccount", "OkxConfig", "PRODUCTION_WS_URL", "PRODUCTION_REST_URL"]

PRODUCTION_WS_URL = "wss://ws.okx.com:8443/ws/v5/business"
PRODUCTION_REST_URL = "https://www.okx.com"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OkxAccount(_Section):
    """One API key. A master account's subscription also receives its sub-accounts' pushes, but
    REST history only returns the key's own transfers: give sub-accounts their own entry (read-only
    key) to backfill them too — the dedup gate drops the pushes seen twice."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    api_key: SecretStr
    secret_key: SecretStr
    passphrase: SecretStr
    uid: str | None = Field(default=None, description="account uid for backfilled rows; looked up when unset")
    deposit_ccy: tuple[str, ...] | None = Field(default=None, description="only these currencies (deposit-info)")
    withdrawal_ccy: tuple[str, ...] | None = Field(default=None, description="only these currencies (withdrawal-info)")
    enabled: bool = True

    @field_validator("deposit_ccy", "withdrawal_ccy", mode="before")
    @classmethod
    def _currencies(cls, value: Any) -> Any:
        """Accept ``"BTC"``, ``"BTC,ETH"`` or a list; an empty filter means every currency."""
        if value is None:
            return None
        if isinstance(value, str):
            value = [part for part in value.split(",")]
        cleaned = tuple(str(part).strip().upper() for part in value if str(part).strip())
        return cleaned or None

    @field_validator("api_key", "secret_key", "passphrase")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class OkxConfig(StreamSettings):
    ws_url: str = PRODUCTION_WS_URL
    rest_url: str = PRODUCTION_REST_URL
    accounts: list[OkxAccount] = Field(default_factory=list)

    # connection life
    ping_interval: float = Field(default=20.0, gt=0, lt=30, description="send text 'ping' after this much silence (< 30 s)")
    pong_timeout: float | None = Field(default=None, gt=0, description="wait this long for 'pong'; default ping_interval")
    notice_reconnect_delay: float = Field(default=1.0, ge=0, description="pause before reconnecting after notice 64008")

    # gap backfill
    backfill_page_limit: int = Field(default=100, ge=1, le=100)
    rest_rate_per_second: float = Field(default=5.0, gt=0, le=6, description="per account; OKX allows 6")

    @property
    def effective_pong_timeout(self) -> float:
        return self.pong_timeout if self.pong_timeout is not None else self.ping_interval
