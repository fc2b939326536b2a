"""The ``binance:`` section: accounts, intervals, windows, limits, and every point the provider
reference marks *unconfirmed* as a setting with a documented default.

Credentials are ``SecretStr`` (``**********`` in reprs, errors and logs); only
``bridge.sources.binance.auth`` reads them. A PEM key is best given as a file:
``secret_key_file: /run/secrets/binance-main.pem`` (any setting accepts ``<name>_file``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.contract.events import Status
from bridge.ingest.poll import PollSettings
from bridge.sources.binance.auth import KeyType
from bridge.sources.binance.parse import Rules

__all__ = ["BinanceAccount", "BinanceConfig", "PRODUCTION_URL", "DAY"]

PRODUCTION_URL = "https://api.binance.com"
"""Binance also lists api-gcp.binance.com and api1…api4.binance.com. There is no testnet for /sapi."""
DAY = 86_400.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BinanceAccount(_Section):
    """One API key (read-only is enough). A sub-account is covered either by its own key (an
    entry of its own, ``sub_account`` naming it: deposits and withdrawals), or by the master's key
    with ``mode: master_subhisrec`` and its email in ``sub_account_emails`` (deposits only: no
    master-side withdrawal history exists). A deposit seen both ways has the same key."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    api_key: SecretStr
    secret_key: SecretStr = Field(description="HMAC secret, or the PEM (PKCS#8) private key of an ed25519/rsa key")
    key_type: KeyType = Field(default="hmac", description="hmac | ed25519 | rsa")
    private_key_passphrase: SecretStr | None = Field(default=None, description="for an encrypted PEM key")
    uid: str | None = Field(default=None, description="account.id of the events; else looked up (GET /api/v3/account), else the name")
    lookup_uid: bool = Field(default=True, description="ask /api/v3/account (weight 20) once for the uid when 'uid' is unset")
    sub_account: str | None = Field(default=None, description="account.sub_account of this key's events (a sub-account's own key)")
    mode: Literal["own", "master_subhisrec"] = Field(
        default="own", description="own: this key's history; master_subhisrec: also each sub_account_emails' deposits (subHisrec)"
    )
    sub_account_emails: tuple[str, ...] = Field(default=(), description="sub-accounts whose deposits the master reads (subHisrec)")
    deposits: bool = Field(default=True, description="poll capital/deposit/hisrec")
    withdrawals: bool = Field(default=True, description="poll capital/withdraw/history")
    poll_localentity: bool = Field(
        default=False,
        description="read withdrawals from localentity/withdraw/history (v1) instead: travel-rule local entities, "
        "in case their withdrawals are missing from the capital history (unconfirmed)",
    )
    enabled: bool = True

    @field_validator("api_key", "secret_key")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("sub_account_emails", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> Any:
        """Accept a list or a comma-separated string."""
        if isinstance(value, str):
            value = value.split(",")
        return tuple(str(part).strip() for part in value or () if str(part).strip())

    @model_validator(mode="after")
    def _mode(self) -> BinanceAccount:
        if self.mode == "master_subhisrec" and not self.sub_account_emails:
            raise ValueError("mode master_subhisrec needs sub_account_emails (from GET /sapi/v1/sub-account/list)")
        if self.mode == "own" and self.sub_account_emails:
            raise ValueError("sub_account_emails are read only with mode master_subhisrec")
        if self.poll_localentity and not self.withdrawals:
            raise ValueError("poll_localentity replaces the withdrawal history: it needs withdrawals on")
        if not (self.deposits or self.withdrawals or self.sub_account_emails):
            raise ValueError("nothing to poll: deposits and withdrawals are both off")
        return self


class BinanceConfig(PollSettings):
    """Polling of the signed capital history; ``poll_interval`` paces the deposit reads and the cycle."""

    base_url: str = Field(default=PRODUCTION_URL, description="REST base URL")
    accounts: list[BinanceAccount] = Field(default_factory=list)

    # windows and pacing (the engine's poll_interval = deposits, 30 s)
    withdrawal_interval: float = Field(default=30.0, gt=0, description="seconds between withdrawal-history reads (weight 18000 each)")
    lookback_days: float = Field(default=7.0, gt=0, le=89, description="hot window re-read every cycle: rows change in place")
    tracker_interval: float = Field(default=300.0, gt=0, description="re-query of non-final transfers older than the hot window")
    requery_txid_max: int = Field(
        default=10, ge=0, description="up to this many open deposits are re-queried by txId each; more: one window over their creation times"
    )
    tracker_max_age_days: float = Field(default=90.0, gt=0, le=90, description="stop re-querying a non-final transfer this old (counted)")
    tracker_max_open: int = Field(default=50_000, ge=100, description="non-final transfers remembered per account (oldest dropped, counted)")
    window_days: float = Field(default=89.0, gt=0, lt=90, description="span of one request (Binance: < 90 days; -1127 beyond, unconfirmed)")
    poll_overlap: float = Field(default=600.0, ge=0, description="seconds read again before the cursor after a restart")
    poll_initial_lookback: float = Field(default=7 * DAY, ge=0, description="first poll without a cursor (at least lookback_days)")
    poll_max_lookback: float = Field(default=89 * DAY, gt=0, description="after an outage, never read further back than this")

    # requests
    recv_window_ms: int = Field(default=5000, ge=1, le=60_000, description="recvWindow (Binance advises <= 5000)")
    time_sync_interval: float = Field(default=300.0, gt=0, description="re-learn the server clock offset (also on -1021)")
    page_limit: int = Field(default=1000, ge=1, le=1000, description="rows per page (max 1000)")
    subhisrec_page_limit: int = Field(
        default=200, ge=1, le=1000, description="rows per subHisrec page; its maximum is unconfirmed (SDKs say 200 or 500): paged until empty"
    )
    include_source: bool = Field(default=False, description="includeSource=true: deposits carry sourceAddress (may be inaccurate)")
    rest_rate_per_second: float = Field(default=1.0, gt=0, le=10, description="requests per second per account (<= 1/s advised)")

    # limits
    ip_weight_limit: int = Field(default=12_000, gt=0, description="per minute and IP, each IP-metered SAPI endpoint")
    uid_weight_limit: int = Field(default=180_000, gt=0, description="per minute and UID, each UID-metered SAPI endpoint")
    api_weight_limit: int = Field(default=6_000, gt=0, description="per minute and IP, /api/v3 (time, account)")
    withdrawal_weight: int = Field(
        default=18_000, gt=0, description="price of one withdrawal-history request (capital or localentity: pages say 18000 or 1)"
    )
    withdrawal_weight_scope: Literal["uid", "ip"] = Field(
        default="uid", description="which budget withdrawals draw on (Binance's pages disagree: unconfirmed)"
    )
    weight_headroom: float = Field(default=0.8, gt=0, le=1, description="plan at most this share of a budget; the rest waits for the next minute")
    max_rate_limit_wait: float = Field(
        default=60.0, gt=0, description="longest in-cycle wait for a budget or Retry-After; longer ends the cycle (no request is sent meanwhile)"
    )

    # normalization (unconfirmed points of the reference)
    status_overrides: dict[Literal["deposit", "withdrawal"], dict[str, Status]] = Field(
        default_factory=dict, description="per direction and Binance code, the contract status to publish (e.g. deposit 7: failed)"
    )
    deposit_travel_rule_hold: bool = Field(default=True, description="travelRuleStatus 1 holds a credited/completed deposit as on_hold")
    deposit_missing_id: Literal["dlq", "txid_fallback"] = Field(
        default="dlq", description="a deposit row without id: DLQ, or key it tx:{txId}:{address}:{addressTag}"
    )
    internal_txid_as_tx_hash: bool = Field(default=True, description="internal transfers' 'Off-chain transfer …' txId as tx_hash")
    occurred_at_mode: Literal["complete_time", "observed"] = Field(
        default="complete_time", description="occurred_at of a final row: its completeTime when present, or always the observation"
    )
    freeze_confirmations_after_final: bool = Field(
        default=True, description="final rows: deposits cap confirmations at the required count, withdrawals publish none"
    )

    @field_validator("status_overrides", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        """Codes as strings (``7`` and ``"7"`` alike)."""
        if isinstance(value, dict):
            return {d: {str(k): v for k, v in (codes or {}).items()} for d, codes in value.items()}
        return value

    @model_validator(mode="after")
    def _windows(self) -> BinanceConfig:
        if self.withdrawal_interval >= self.lookback_days * DAY:
            raise ValueError("withdrawal_interval must be shorter than the hot window (lookback_days)")
        if self.poll_interval >= self.lookback_days * DAY:
            raise ValueError("poll_interval must be shorter than the hot window (lookback_days)")
        return self

    @model_validator(mode="after")
    def _deposits_read_once(self) -> BinanceConfig:
        """A sub-account's deposits come from one reader: its own key or the master's subHisrec.
        Both would publish the same transfer from two row shapes, and subHisrec rows carry no
        travel-rule flag: a held deposit could be published ``credited`` beside ``on_hold``."""
        own = {
            account.sub_account.casefold(): account.name
            for account in self.accounts
            if account.enabled and account.deposits and account.sub_account
        }
        for master in self.accounts:
            if not master.enabled:
                continue
            for email in master.sub_account_emails:
                if email.casefold() in own:
                    raise ValueError(
                        f"sub-account {email} has its deposits read twice: by its own key (account {own[email.casefold()]!r}) "
                        f"and by {master.name!r} through subHisrec; remove it from sub_account_emails or set deposits: false "
                        "on its own key (subHisrec rows carry no travel-rule flag)"
                    )
        return self

    @property
    def rules(self) -> Rules:
        return Rules(
            status_overrides={direction: dict(codes) for direction, codes in self.status_overrides.items()},
            deposit_travel_rule_hold=self.deposit_travel_rule_hold,
            deposit_missing_id=self.deposit_missing_id,
            internal_txid_as_tx_hash=self.internal_txid_as_tx_hash,
            occurred_at_mode=self.occurred_at_mode,
            freeze_confirmations_after_final=self.freeze_confirmations_after_final,
        )

    def describe(self) -> str:
        accounts = self.enabled_accounts() if self.enabled else [a for a in self.accounts if a.enabled]
        emails = sum(len(a.sub_account_emails) for a in accounts)
        extra = f" + {emails} sub-account{'' if emails == 1 else 's'} via subHisrec" if emails else ""
        return f"{len(accounts)} account{'' if len(accounts) == 1 else 's'}{extra}, every {self.poll_interval:g}s, hot window {self.lookback_days:g}d"
