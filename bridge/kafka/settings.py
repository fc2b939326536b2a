"""Connection settings of the Kafka clients and the schema registry, shared by delivery and consumer.

Each layer owns the settings models it reads; the service composes them into one configuration tree
(``kafka:`` and ``schema_registry:`` sections, ``BRIDGE_KAFKA__…``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["KafkaSettings", "SchemaRegistrySettings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors never echo the password

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "transfer-bridge"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    linger_ms: int = Field(default=5, ge=0, le=1000)
    max_batch_size: int = Field(default=262_144, ge=16_384)
    max_request_size: int = Field(
        default=1_000_000, ge=65_536,
        description="keep below the broker's message.max.bytes (1 MiB default) so oversized records are refused before they reach a batch (a broker-side rejection can wedge the idempotent partition); each enabled webhook's max_body_bytes plus 16384 bytes of record overhead must fit it",
    )
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    retry_backoff_ms: int = Field(default=200, ge=10)

    @field_validator("sasl_username", "sasl_password")
    @classmethod
    def _not_empty(cls, value: str | SecretStr | None) -> str | SecretStr | None:
        """An empty credential (``BRIDGE_KAFKA__SASL_PASSWORD=``) is a mistake, reported against where
        it was set; it would otherwise pass the check below and fail only at the broker."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is not None and not text:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _sasl_credentials(self) -> KafkaSettings:
        """SASL without a user fails only when connecting, deep inside aiokafka (SCRAM: an
        AttributeError); SASL credentials next to a non-SASL protocol would be silently unused."""
        sasl = self.security_protocol.startswith("SASL")
        if sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and sasl_password")
        if not sasl and (self.sasl_username or self.sasl_password is not None or self.sasl_mechanism):
            raise ValueError(
                f"sasl_* settings are given but security_protocol is {self.security_protocol}: use SASL_SSL"
            )
        return self


class SchemaRegistrySettings(_Section):
    """A Confluent-compatible registry (Confluent, Karapace, Apicurio ``…/apis/ccompat/v7``).

    Without ``url`` values are plain JSON; with it they are published in the Confluent wire
    format with the schema id looked up once at start.
    """

    url: str | None = Field(default=None, description="base URL; None = plain JSON values")
    subject_strategy: Literal["topic_name", "record_name", "topic_record_name"] = "topic_name"
    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    ssl_cafile: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, description="per request")
    startup_timeout_seconds: float = Field(default=60.0, gt=0, description="retry window for the id lookup at start")
    auto_register: bool = Field(default=False, description="register the schema at start if missing (else: refuse to start)")
