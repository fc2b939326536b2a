"""Settings every source of a kind shares; a provider's config section extends one of these.

Keys stay flat in each provider's section (``okx.reconnect_max``, ``ripio.backfill_interval``), so
a provider's configuration reads the same whichever engine runs it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

__all__ = [
    "ProviderSection", "AccountsSection", "StreamSettings", "WebhookSettings", "WebhookBackfillSettings", "IPNetwork",
    "RECORD_OVERHEAD_BYTES",
]  # fmt: skip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RECORD_OVERHEAD_BYTES = 16_384
"""What a webhook body's Kafka record adds to the body, at most: key, DLQ headers (the reason and
every sender-chosen text are capped by the engine) and the record batch framing. A body of
``max_body_bytes`` plus this must fit ``kafka.max_request_size``, so any body the route accepts can
be kept whole."""


class ProviderSection(BaseModel):
    """One provider's section: off unless enabled; unknown keys are errors, not silent defaults."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False

    def describe(self) -> str:
        """What runs, in a few words, for ``check-config``."""
        return "enabled"


class AccountsSection(ProviderSection):
    """A provider whose sources are its accounts (one source each); names are unique."""

    accounts: list[Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _accounts(self) -> AccountsSection:
        names = [account.name for account in self.accounts]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"account names must be unique: {', '.join(duplicated)}")
        return self

    def describe(self) -> str:
        count = sum(account.enabled for account in self.accounts)
        return f"{count} account{'' if count == 1 else 's'}"

    def enabled_accounts(self) -> list[Any]:
        return [account for account in self.accounts if account.enabled] if self.enabled else []


class StreamSettings(AccountsSection):
    """Connection life, history backfill and REST pacing of a streaming provider."""

    ca_bundle: FilePath | None = Field(
        default=None, description="PEM file of the CAs to trust for ws_url and rest_url instead of the system's"
    )
    handshake_timeout: float = Field(default=10.0, gt=0, description="open + login + subscribe acks")
    reconnect_initial: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    min_uptime: float = Field(default=10.0, ge=0, description="backoff resets only after a connection lived this long")
    config_error_retry: float = Field(default=60.0, gt=0, description="retry pace after credentials were refused")

    # gap backfill
    backfill_enabled: bool = True
    backfill_interval: float = Field(default=300.0, gt=0, description="safety-net pass while connected")
    backfill_overlap: float = Field(default=120.0, ge=0, description="seconds read again before the window")
    backfill_initial_lookback: float = Field(default=86_400.0, ge=0, description="window of the first pass after start")
    backfill_max_lookback: float = Field(default=7 * 86_400.0, gt=0, description="never read further back than this")
    backfill_retry: float = Field(default=10.0, gt=0, description="retry pace of a failed pass")
    backfill_max_held: int = Field(default=50_000, ge=100, description="live pushes held back during a pass")
    rest_timeout: float = Field(default=10.0, gt=0)
    rest_max_retries: int = Field(default=6, ge=0, description="per request, on HTTP 429 / 5xx / network errors")


def _networks(value: Any) -> Any:
    """Accept a list or a comma-separated string of addresses/CIDRs (``203.0.113.7``, ``10.0.0.0/8``)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    return [ipaddress.ip_network(str(part).strip(), strict=False) for part in value]


class WebhookSettings(ProviderSection):
    """One signed webhook route: who may post, how much, and how long a sender waits for Kafka."""

    path: str = Field(default="/webhooks", pattern=r"^/[A-Za-z0-9._~/-]*$", description="POST route of the webhook")
    allowed_ips: list[IPNetwork] = Field(
        default_factory=list, description="source addresses/CIDRs allowed to post; empty = any (signature still required)"
    )
    trusted_proxies: list[IPNetwork] = Field(
        default_factory=list,
        description="peers (ingress, load balancer) whose X-Forwarded-For is believed for the allowlist",
    )
    max_body_bytes: int = Field(
        default=983_040,
        ge=1024,
        le=64 * 1_048_576,
        description="larger bodies get 413; plus 16384 bytes of record overhead it must fit kafka.max_request_size, "
        "so every accepted body can be kept whole (960 KiB fits the 1000000 default)",
    )
    ack_timeout_seconds: float = Field(
        default=20.0, gt=0, lt=60, description="longest wait for Kafka's ack before answering 503"
    )
    max_pending: int = Field(
        default=10_000,
        ge=1,
        description="deliveries accepted but still waiting for Kafka after their 503; past this, new ones get 503 at once",
    )

    def describe(self) -> str:
        return self.path

    def record_limit_problem(self, max_request_size: int, section: str = "webhook") -> str | None:
        """Why a body this route accepts might not fit one Kafka record of ``max_request_size``
        bytes (its dead letter is the body plus at most ``RECORD_OVERHEAD_BYTES``); None if it fits."""
        if self.max_body_bytes + RECORD_OVERHEAD_BYTES <= max_request_size:
            return None
        return (
            f"{section}.max_body_bytes ({self.max_body_bytes}) plus {RECORD_OVERHEAD_BYTES} bytes of record overhead "
            f"exceeds kafka.max_request_size ({max_request_size}): a body that large could be acknowledged but not "
            f"stored whole; lower {section}.max_body_bytes to at most {max_request_size - RECORD_OVERHEAD_BYTES} "
            f"or raise kafka.max_request_size (and the broker's message.max.bytes)"
        )

    @field_validator("allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        """Per field, so a malformed CIDR is reported under its key (``openxswitch.allowed_ips``)."""
        return _networks(value)


class WebhookBackfillSettings(WebhookSettings):
    """A webhook route whose provider also lists its transfers over REST: the gap backfill's pace
    and window (``bridge.ingest.webhook_backfill``)."""

    backfill_enabled: bool = True
    backfill_interval: float = Field(default=300.0, gt=0)
    backfill_retry: float = Field(default=10.0, gt=0, description="retry pace of a failed pass")
    backfill_overlap: float = Field(default=3600.0, ge=0, description="seconds read again before the window")
    backfill_initial_lookback: float = Field(default=86_400.0, ge=0)
    backfill_max_lookback: float = Field(default=30 * 86_400.0, gt=0, description="track_max_age_days")
    rest_timeout: float = Field(default=10.0, gt=0)
    rest_max_retries: int = Field(default=6, ge=0)

    @property
    def backfills(self) -> bool:
        """Does the receiver run passes? A provider adds its own conditions (REST credentials)."""
        return self.backfill_enabled
