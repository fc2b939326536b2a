"""Build the pipeline a configuration asks for: embedded (SQLite) or exactly-once (Kafka) mode."""

from __future__ import annotations

from bridge.contract.events import TransferEvent
from bridge.delivery.dedup import DedupGate, DedupStore, MemoryStore
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher, Record
from bridge.delivery.publish_tx import TransactionalPublisher
from bridge.delivery.settings import DedupSettings, PipelineSettings, TopicSettings
from bridge.delivery.store_kafka import KafkaStateStore
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings

__all__ = ["build_pipeline", "build_slot_pipeline"]


def build_pipeline(
    kafka: KafkaSettings,
    topics: TopicSettings,
    dedup: DedupSettings,
    pipeline: PipelineSettings | None = None,
    schema_registry: SchemaRegistrySettings | None = None,
) -> Pipeline:
    """Not started: call ``await pipeline.start()`` (loads dedup state, connects, creates topics)."""
    pipeline = pipeline or PipelineSettings()
    retention = dedup.retention_days * 86400
    max_in_flight, not_ready_after = pipeline.max_in_flight, pipeline.not_ready_after_seconds
    if dedup.store == "kafka":
        store = KafkaStateStore(
            kafka, dedup.state_topic, partitions=topics.partitions, replication_factor=topics.replication_factor
        )
        return _exactly_once(
            kafka, topics, dedup, pipeline, schema_registry, store, dedup.transactional_id or f"{kafka.client_id}-0"
        )
    backing: DedupStore = SQLiteStore(dedup.path) if dedup.store == "sqlite" else MemoryStore()
    return Pipeline(
        Publisher(kafka, topics, include_raw=pipeline.include_raw, schema_registry=schema_registry),
        DedupGate(backing, retention_seconds=retention, max_unpersisted=dedup.max_unpersisted),
        max_in_flight=max_in_flight,
        not_ready_after=not_ready_after,
    )


def build_slot_pipeline(
    kafka: KafkaSettings,
    topics: TopicSettings,
    dedup: DedupSettings,
    pipeline: PipelineSettings | None,
    schema_registry: SchemaRegistrySettings | None,
    *,
    slot: int,
    slots: int,
    transactional_id: str,
) -> Pipeline:
    """Cluster mode, one slot: exactly-once, its state in partition ``slot`` of the state topic,
    its own transactional id (the slot's next owner fences this one). Start it with
    ``publisher_first=True``."""
    store = KafkaStateStore(
        kafka,
        dedup.state_topic,
        partitions=max(topics.partitions, slots),
        replication_factor=topics.replication_factor,
        partition=slot,
    )
    return _exactly_once(kafka, topics, dedup, pipeline or PipelineSettings(), schema_registry, store, transactional_id)


def _exactly_once(
    kafka: KafkaSettings,
    topics: TopicSettings,
    dedup: DedupSettings,
    pipeline: PipelineSettings,
    schema_registry: SchemaRegistrySettings | None,
    store: KafkaStateStore,
    transactional_id: str,
) -> Pipeline:
    publisher = TransactionalPublisher(
        kafka, topics, transactional_id=transactional_id, include_raw=pipeline.include_raw, schema_registry=schema_registry
    )

    def state_record(event: TransferEvent, state: bytes, final_at: int | None) -> Record:
        store.remember_final(event.key, final_at)
        return store.state_record(event.key, state, final_at)

    return Pipeline(
        publisher,
        DedupGate(store, retention_seconds=dedup.retention_days * 86400, max_unpersisted=dedup.max_unpersisted),
        state_records=state_record,
        max_in_flight=pipeline.max_in_flight,
        not_ready_after=pipeline.not_ready_after_seconds,
    )
