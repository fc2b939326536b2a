"""Configuration: one pydantic-settings tree, from a YAML/TOML file and ``BRIDGE_…`` variables.

Nested sections use ``__`` in variable names (``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``). Secrets are
``SecretStr`` so they print as ``**********`` everywhere, including errors and reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "KafkaSettings",
    "TopicSettings",
    "DedupSettings",
    "PipelineSettings",
    "SchemaRegistrySettings",
    "BridgeSettings",
]


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
    max_request_size: int = Field(default=4_194_304, ge=1_048_576)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    retry_backoff_ms: int = Field(default=200, ge=10)

    @model_validator(mode="after")
    def _sasl_credentials(self) -> "KafkaSettings":
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


class TopicSettings(_Section):
    deposit: str = "transfers.deposit.v1"
    withdrawal: str = "transfers.withdrawal.v1"
    dead_letter: str = "transfers.dlq.v1"
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=7)
    create: bool = True


class DedupSettings(_Section):
    store: Literal["sqlite", "memory", "kafka"] = Field(
        default="sqlite",
        description="sqlite: embedded file (default); kafka: exactly-once mode, state in a compacted "
        "topic written in the same transaction as each event; memory: tests only",
    )
    path: Path = Path("./.state/dedup.sqlite3")
    retention_days: float = Field(default=30.0, gt=0)
    state_topic: str = "transfers.dedup-state.v1"
    transactional_id: str | None = Field(
        default=None,
        description="kafka store: stable per instance (e.g. the StatefulSet pod name) so a restarted "
        "instance fences its predecessor; defaults to '<client_id>-0'",
    )


class PipelineSettings(_Section):
    max_in_flight: int = Field(default=20_000, ge=1, description="events accepted but not yet acked by Kafka")
    include_raw: bool = True
    not_ready_after_seconds: float = Field(default=5.0, gt=0, description="unacked age that flips /readyz")


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


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    dedup: DedupSettings = DedupSettings()
    pipeline: PipelineSettings = PipelineSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
