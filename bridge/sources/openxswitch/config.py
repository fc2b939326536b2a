"""OpenXSwitch webhook configuration: the core's ``WebhookSettings`` plus the HMAC secrets.

The service shell nests ``OpenXSwitchConfig`` under ``BridgeSettings`` (``BRIDGE_OPENXSWITCH__…``;
list values as JSON, e.g. ``BRIDGE_OPENXSWITCH__SECRETS='["old","new"]'``). Secrets are
``SecretStr``: they print as ``**********`` in reprs, validation errors and logs; only the
receiver reads their value, to compute HMACs.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.ingest.settings import IPNetwork, WebhookSettings

__all__ = ["OpenXSwitchConfig", "IPNetwork", "DEFAULT_PATH"]

DEFAULT_PATH = "/webhooks/openxswitch"


class OpenXSwitchConfig(WebhookSettings):
    path: str = Field(default=DEFAULT_PATH, pattern=r"^/[A-Za-z0-9._~/-]*$", description="POST route of the webhook")
    ack_timeout_seconds: float = Field(
        default=20.0, gt=0, lt=60, description="longest wait for Kafka's ack before answering 503 (provider allows 60 s)"
    )
    secrets: list[SecretStr] = Field(
        default_factory=list,
        description="webhook secrets; every one is accepted (list old and new while rotating)",
    )

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
    def _secret_when_enabled(self) -> OpenXSwitchConfig:
        if self.enabled and not self.secrets:
            raise ValueError("openxswitch is enabled but no webhook secret is configured")
        return self
