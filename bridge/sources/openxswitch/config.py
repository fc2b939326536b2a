"""OpenXSwitch webhook configuration.

The service shell nests ``OpenXSwitchConfig`` under ``BridgeSettings`` (``BRIDGE_OPENXSWITCH__…``;
list values as JSON, e.g. ``BRIDGE_OPENXSWITCH__SECRETS='["old","new"]'``). Secrets are
``SecretStr``: they print as ``**********`` in reprs, validation errors and logs; only the
receiver reads their value, to compute HMACs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["OpenXSwitchConfig", "IPNetwork", "DEFAULT_PATH"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PATH = "/webhooks/openxswitch"


def _networks(value: Any) -> Any:
    """Accept a list or a comma-separated string of addresses/CIDRs (``203.0.113.7``, ``10.0.0.0/8``)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    return [ipaddress.ip_network(str(part).strip(), strict=False) for part in value]


class OpenXSwitchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    path: str = Field(default=DEFAULT_PATH, pattern=r"^/[A-Za-z0-9._~/-]*$", description="POST route of the webhook")
    secrets: list[SecretStr] = Field(
        default_factory=list,
        description="webhook secrets; every one is accepted (list old and new while rotating)",
    )
    allowed_ips: list[IPNetwork] = Field(
        default_factory=list, description="source addresses/CIDRs allowed to post; empty = any (signature still required)"
    )
    trusted_proxies: list[IPNetwork] = Field(
        default_factory=list,
        description="peers (ingress, load balancer) whose X-Forwarded-For is believed for the allowlist",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576, description="larger bodies get 413")
    ack_timeout_seconds: float = Field(
        default=20.0, gt=0, lt=60, description="longest wait for Kafka's ack before answering 503 (provider allows 60 s)"
    )
    max_pending: int = Field(
        default=10_000,
        ge=1,
        description="deliveries accepted but still waiting for Kafka after their 503; past this, new ones get 503 at once",
    )

    @field_validator("allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        return _networks(value)

    @field_validator("secrets", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """A single secret may be given as a plain string (never split: a secret may contain commas)."""
        if isinstance(value, (str, SecretStr)):
            return [value]
        return value

    @field_validator("secrets")
    @classmethod
    def _not_empty(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not secret.get_secret_value() for secret in value):
            raise ValueError("a webhook secret must not be empty")
        return value

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> "OpenXSwitchConfig":
        if self.enabled and not self.secrets:
            raise ValueError("openxswitch is enabled but no webhook secret is configured")
        return self
