"""The ``cluster:`` section: group membership, slots, and the topics cluster mode adds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ClusterSettings"]


class ClusterSettings(BaseModel):
    """Replicas with the same ``group_id`` share the sources' slots; off by default (one process)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="run as one replica of a group (requires dedup.store: kafka)")
    group_id: str = Field(
        default="transfer-bridge",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="replicas with the same id share the work; also the prefix of each slot's transactional id",
    )
    slots: int = Field(
        default=1,
        ge=1,
        le=256,
        description="units of work handed out by the group: 1 = active/standby, more = scale-out; fixed for the "
        "life of a group (changing it moves sources between slots: use a new group_id and state topic)",
    )
    session_timeout_ms: int = Field(
        default=8000, ge=1000, le=300_000, description="a replica silent this long loses its slots (failover time)"
    )
    heartbeat_interval_ms: int = Field(default=2000, ge=100, le=60_000, description="below a third of the session timeout")
    rebalance_timeout_ms: int = Field(
        default=30_000, ge=1000, le=600_000, description="time a replica has to drain revoked slots during a rebalance"
    )
    coordination_topic: str = Field(
        default="transfer-bridge.cluster.v1", min_length=1, description="one partition per slot; carries no records"
    )
    ingress_topic: str = Field(
        default="transfers.ingress.v1",
        min_length=1,
        description="verified webhook deliveries, keyed by transfer, partition = slot; the slot owner publishes them",
    )
    ingress_retention_ms: int = Field(default=7 * 86_400_000, ge=3_600_000, description="ingress topic retention")

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> ClusterSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("cluster.heartbeat_interval_ms must be at most a third of cluster.session_timeout_ms")
        if self.rebalance_timeout_ms < self.session_timeout_ms:
            raise ValueError("cluster.rebalance_timeout_ms must be at least cluster.session_timeout_ms")
        return self

    def transactional_id(self, slot: int) -> str:
        """Stable per slot, whoever holds it: the next owner's producer fences the previous one."""
        return f"{self.group_id}-slot-{slot}"

    @property
    def ingress_group(self) -> str:
        """Consumer group under which the owners' ingress offsets are committed (in transactions)."""
        return f"{self.group_id}.ingress"
