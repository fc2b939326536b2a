"""OKX source configuration: one connection per account, every interval tunable.

The service shell nests ``OkxConfig`` under ``BridgeSettings`` (``BRIDGE_OKX__…``). Credentials are
``SecretStr`` so they print as ``**********`` in reprs, validation errors and logs; only
``bridge.sources.okx.auth`` ever reads their value.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, field_validator, model_validator

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


class OkxConfig(_Section):
    enabled: bool = False
    ws_url: str = PRODUCTION_WS_URL
    rest_url: str = PRODUCTION_REST_URL
    ca_bundle: FilePath | None = Field(
        default=None, description="PEM file of the CAs to trust for ws_url and rest_url instead of the system's"
    )
    accounts: list[OkxAccount] = Field(default_factory=list)

    # connection life
    ping_interval: float = Field(default=20.0, gt=0, lt=30, description="send text 'ping' after this much silence (< 30 s)")
    pong_timeout: float | None = Field(default=None, gt=0, description="wait this long for 'pong'; default ping_interval")
    handshake_timeout: float = Field(default=10.0, gt=0, description="open + login + subscribe acks")
    reconnect_initial: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    min_uptime: float = Field(default=10.0, ge=0, description="backoff resets only after a connection lived this long")
    notice_reconnect_delay: float = Field(default=1.0, ge=0, description="pause before reconnecting after notice 64008")
    config_error_retry: float = Field(default=60.0, gt=0, description="retry pace after credentials were refused")

    # gap backfill
    backfill_enabled: bool = True
    backfill_interval: float = Field(default=300.0, gt=0, description="safety-net pass while connected")
    backfill_overlap: float = Field(default=120.0, ge=0, description="seconds read again before the gap")
    backfill_initial_lookback: float = Field(default=86_400.0, ge=0, description="window of the first pass after start")
    backfill_max_lookback: float = Field(default=7 * 86_400.0, gt=0, description="never read further back than this")
    backfill_retry: float = Field(default=10.0, gt=0, description="retry pace of a failed pass")
    backfill_page_limit: int = Field(default=100, ge=1, le=100)
    backfill_max_held: int = Field(default=50_000, ge=100, description="live pushes held back during a pass")
    rest_rate_per_second: float = Field(default=5.0, gt=0, le=6, description="per account; OKX allows 6")
    rest_timeout: float = Field(default=10.0, gt=0)
    rest_max_retries: int = Field(default=6, ge=0, description="per page, on HTTP 429 / code 50011 / 5xx")

    @model_validator(mode="after")
    def _unique_names(self) -> "OkxConfig":
        names = [account.name for account in self.accounts]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"account names must be unique: {', '.join(duplicated)}")
        return self

    @property
    def effective_pong_timeout(self) -> float:
        return self.pong_timeout if self.pong_timeout is not None else self.ping_interval
