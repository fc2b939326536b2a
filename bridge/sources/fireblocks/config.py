"""The ``fireblocks:`` section: the core's ``WebhookBackfillSettings`` plus keys, direction rules and REST access.

Every point the provider reference marks *unconfirmed* is a setting here with the documented
default: ``legacy_public_keys`` (which sandbox key is current), ``jws_allow_unencoded`` (RFC 7797
``b64: false``), ``own_peer_types``, ``internal_transfers``, ``status_overrides``,
``frozen_substatuses``, ``deposit_fee``, ``chain_from``; ``ack_timeout_seconds`` (Fireblocks does
not document its timeout: 5 s). Secrets (``api_key``, the private key file's content) are only read
by ``auth``; ``SecretStr`` keeps them out of reprs and validation errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from bridge.ingest.settings import WebhookBackfillSettings

__all__ = ["FireblocksConfig", "DEFAULT_PATH", "JWKS_URLS", "API_URLS"]

DEFAULT_PATH = "/webhooks/fireblocks"
Environment = Literal["us", "eu", "eu2", "sandbox"]
JWKS_URLS: dict[str, str] = {
    "us": "https://keys.fireblocks.io/.well-known/jwks.json",
    "eu": "https://eu-keys.fireblocks.io/.well-known/jwks.json",
    "eu2": "https://eu2-keys.fireblocks.io/.well-known/jwks.json",
    "sandbox": "https://sandbox-keys.fireblocks.io/.well-known/jwks.json",
}
API_URLS: dict[str, str] = {
    "us": "https://api.fireblocks.io",
    "eu": "https://eu-api.fireblocks.io",
    "eu2": "https://eu2-api.fireblocks.io",
    "sandbox": "https://sandbox-api.fireblocks.io",
}


class FireblocksConfig(WebhookBackfillSettings):
    path: str = Field(default=DEFAULT_PATH, pattern=r"^/[A-Za-z0-9._~/-]*$", description="POST route (v1 and v2)")
    ack_timeout_seconds: float = Field(
        default=5.0, gt=0, lt=60, description="answer within this (Fireblocks' own timeout is not documented)"
    )
    name: str = Field(default="webhook", pattern=r"^[A-Za-z0-9_.-]+$", description="source name suffix: fireblocks:<name>")
    workspace_id: str | None = Field(default=None, description="expected tenantId/workspaceId; others are refused to the DLQ")
    environment: Environment = "us"

    # -- webhook signatures
    legacy_public_keys: list[FilePath] = Field(
        default_factory=list, description="v1 PEM public keys (production, EU, sandbox differ): any one may verify"
    )
    accept_legacy: bool = Field(default=True, description="without a JWS header, accept a valid Fireblocks-Signature")
    require_jws: bool = Field(default=False, description="refuse every delivery without a valid v2 JWS")
    jwks_url: str | None = Field(default=None, description="v2 JWKS; default by environment")
    jwks_file: FilePath | None = Field(default=None, description="a static JWKS (air-gapped runs, tests); no fetching")
    jwks_refresh_s: float = Field(default=3600.0, gt=0, description="JWKS cache lifetime")
    jwks_min_refetch_s: float = Field(default=60.0, ge=0, description="an unknown kid refetches at most this often")
    jwks_timeout_s: float = Field(default=3.0, gt=0, description="one JWKS fetch; a failure answers 503")
    jws_allow_unencoded: bool = Field(default=False, description="accept RFC 7797 b64=false JWS (undocumented)")

    # -- normalization
    own_peer_types: list[str] = Field(default_factory=lambda: ["VAULT_ACCOUNT"], description="peer types that are ours")
    internal_transfers: Literal["both", "withdrawal", "deposit", "skip"] = "both"
    operations: list[str] = Field(default_factory=lambda: ["TRANSFER"], description="operations that are published")
    frozen_substatuses: list[str] = Field(
        default_factory=lambda: ["AUTO_FREEZE", "FROZEN_MANUALLY"], description="incoming REJECTED with these is on_hold"
    )
    status_overrides: dict[str, str] = Field(
        default_factory=dict,
        description="'STATUS' or 'STATUS/SUBSTATUS' or 'deposit:STATUS' → contract status (e.g. on_hold)",
    )
    deposit_fee: bool = Field(default=False, description="publish feeInfo.networkFee on deposits too")
    chain_from: Literal["fee_currency", "none"] = "fee_currency"
    amount_fallback: Literal["dlq", "deprecated_number"] = "dlq"
    reorder_memory: int = Field(default=100_000, ge=0, description="keys whose last lastUpdated is remembered")
    ordering_warmup_seconds: float = Field(
        default=60.0,
        ge=0,
        description="after a start, deliveries wait (503 past ack_timeout_seconds) until the first backfill pass has "
        "refilled the ordering memory, for at most this long; 0 = never wait",
    )

    # -- REST backfill
    api_key: SecretStr | None = None
    api_private_key_file: FilePath | None = None
    base_url: str | None = Field(default=None, description="REST base (without /v1); default by environment")
    page_limit: int = Field(default=500, ge=1, le=500)
    rest_rate_per_second: float = Field(default=5.0, gt=0, description="rate limits are undocumented: stay low")

    @field_validator("legacy_public_keys", "own_peer_types", "operations", "frozen_substatuses", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            return [part.strip() for part in str(value).split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _rest_credentials_pair(self) -> FireblocksConfig:
        """A key without its private key (or the reverse) is a typo, not "backfill off"."""
        if (self.api_key is None) != (self.api_private_key_file is None):
            raise ValueError("fireblocks.api_key and fireblocks.api_private_key_file go together")
        return self

    @property
    def source_name(self) -> str:
        return f"fireblocks:{self.name}"

    @property
    def backfills(self) -> bool:
        """Backfill runs only with REST credentials (``api_key`` + ``api_private_key_file``)."""
        return self.backfill_enabled and self.api_key is not None and self.api_private_key_file is not None

    def resolved_jwks_url(self) -> str:
        return self.jwks_url or JWKS_URLS[self.environment]

    def resolved_base_url(self) -> str:
        return (self.base_url or API_URLS[self.environment]).rstrip("/")

    def describe(self) -> str:
        return f"{self.path} ({'v1+v2' if self.accept_legacy and not self.require_jws else 'v2'}; backfill {'on' if self.backfills else 'off'})"
