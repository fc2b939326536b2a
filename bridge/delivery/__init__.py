"""From a parsed item to Kafka: the dedup gate and its stores, the publisher, the pipeline (per-key order, ack before mark, retries, backpressure)."""
