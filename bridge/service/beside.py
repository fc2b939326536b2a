"""The pipeline of a command that publishes beside the running service (``dlq replay``,
``reconcile --repair``): built from the service's configuration, refused in cluster mode."""

from __future__ import annotations

from bridge.delivery.assemble import build_side_pipeline
from bridge.delivery.pipeline import Pipeline
from bridge.service.settings import BridgeSettings

__all__ = ["side_pipeline", "ClusterModeRefused"]


class ClusterModeRefused(ValueError):
    """Cluster mode: the command cannot keep each transfer's state where its slot owner restores it."""


def side_pipeline(settings: BridgeSettings, name: str) -> Pipeline:
    """Not started. Refused in cluster mode: there a transfer's state lives in the state-topic
    partition of the slot that owns it (a stream or poll transfer: its account's slot, which the
    event does not name; a webhook transfer: its key's), so a state written from here would be
    invisible to the slot owner's restore and could be published again after a handover."""
    if settings.cluster.enabled:
        raise ClusterModeRefused(
            f"{name} is not supported in cluster mode (cluster.enabled: true): a transfer's dedup state "
            "lives in its slot's partition of the state topic, which this command cannot tell "
            "(a dry run, or reconcile without --repair, still reports what it would publish)"
        )
    return build_side_pipeline(
        settings.kafka, settings.topics, settings.dedup, settings.pipeline, settings.schema_registry, name=name
    )
