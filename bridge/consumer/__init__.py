"""Reading the bridge's transfer events: a typed consumer for the downstream teams.

Everything a consumer needs comes from here: the reader and the settings it takes.
"""

from bridge.consumer.reader import InvalidRecord, TransferEventConsumer
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings

__all__ = ["TransferEventConsumer", "InvalidRecord", "KafkaSettings", "SchemaRegistrySettings"]
