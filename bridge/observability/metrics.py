"""Prometheus metrics of the whole bridge, defined once so every module counts the same way."""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "labelled",
    "CLUSTER_MEMBER",
    "CLUSTER_SLOTS_HELD",
    "CLUSTER_REBALANCES",
    "CLUSTER_HANDOVER",
    "CLUSTER_FENCED",
    "EVENTS_RECEIVED",
    "BACKFILL_FAILURES",
    "PARSER_ERRORS",
    "EVENTS_PUBLISHED",
    "EVENTS_DEDUPLICATED",
    "EVENTS_DEAD_LETTERED",
    "EVENTS_UNKNOWN_STATUS",
    "PRODUCE_LATENCY",
    "END_TO_END_LATENCY",
    "IN_FLIGHT",
    "DEDUP_TRANSFERS",
    "PRODUCE_RETRIES",
    "PRODUCER_REBUILDS",
    "SOURCE_CONNECTIONS",
    "SOURCE_RECONNECTS",
    "SOURCE_CONNECTED",
    "BACKFILL_RUNS",
    "BACKFILL_ITEMS",
    "SOURCE_GAPS",
    "LAST_EVENT_TIMESTAMP",
    "WEBHOOK_REQUESTS",
    "WEBHOOK_IGNORED",
    "WEBHOOK_SIGNATURE_MATCHES",
    "WEBHOOK_LATENCY",
    "SOURCE_RESTARTS",
    "SOURCE_READY",
    "SOURCE_LAST_EVENT_AGE",
    "READY",
    "KAFKA_REACHABLE",
    "QUEUED",
    "DEDUP_STORE_BYTES",
    "DEDUP_STORE_FAILURES",
    "DEDUP_UNPERSISTED",
    "BUILD_INFO",
    "KAFKA_CLIENT_ERRORS",
    "POLL_REQUESTS",
    "POLL_WEIGHT",
    "POLL_WEIGHT_USED",
    "POLL_RATE_LIMIT_WAITS",
    "POLL_TRACKED_OPEN",
    "POLL_TRACKING_EXPIRED",
    "OPEN_TRANSFERS",
    "OLDEST_OPEN_TRANSFER_AGE",
    "STUCK_TRANSFERS",
    "STUCK_THRESHOLD",
    "CONFIG_GENERATION",
    "CONFIG_RELOADS",
]

EVENTS_RECEIVED = Counter(
    "bridge_events_received", "Normalized events entering the pipeline", ["provider", "direction"]
)
EVENTS_PUBLISHED = Counter(
    "bridge_events_published", "Events acknowledged by Kafka", ["provider", "direction"]
)
EVENTS_DEDUPLICATED = Counter(
    "bridge_events_deduplicated",
    "Events dropped by the dedup gate",
    ["provider", "direction", "reason"],
)
EVENTS_DEAD_LETTERED = Counter(
    "bridge_events_dead_lettered", "Payloads written to the dead-letter topic", ["provider", "channel"]
)
EVENTS_UNKNOWN_STATUS = Counter(
    "bridge_events_unknown_status",
    "Events published with a provider status this contract version does not know",
    ["provider", "direction"],
)
PRODUCE_LATENCY = Histogram(
    "bridge_produce_latency_seconds",
    "From handing a record to the producer to Kafka's ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_LATENCY = Histogram(
    "bridge_end_to_end_latency_seconds",
    "From the provider's state time (occurred_at) to Kafka's ack",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
IN_FLIGHT = Gauge("bridge_in_flight", "Events and dead letters accepted but not yet acknowledged by Kafka")
DEDUP_TRANSFERS = Gauge("bridge_dedup_transfers", "Transfers the dedup gate remembers")
PRODUCE_RETRIES = Counter("bridge_produce_retries", "Records sent again after a failed produce", ["error"])
PRODUCER_REBUILDS = Counter("bridge_producer_rebuilds", "Producers replaced after they stopped making progress")
SOURCE_CONNECTIONS = Counter(
    "bridge_source_connections", "Connections opened to a provider", ["provider", "account"]
)
SOURCE_RECONNECTS = Counter(
    "bridge_source_reconnects", "Connections lost and retried", ["provider", "account", "reason"]
)
SOURCE_CONNECTED = Gauge(
    "bridge_source_connected", "1 while the source is connected and subscribed", ["provider", "account"]
)
BACKFILL_RUNS = Counter("bridge_backfill_runs", "Backfill passes", ["provider", "account", "trigger"])
BACKFILL_ITEMS = Counter("bridge_backfill_items", "Items read by backfill", ["provider", "account"])
BACKFILL_FAILURES = Counter(
    "bridge_backfill_failures", "Backfill passes or polls that failed (retried later)", ["provider", "account"]
)
PARSER_ERRORS = Counter(
    "bridge_parser_errors", "Payloads a parser failed on unexpectedly (dead-lettered)", ["provider"]
)
SOURCE_GAPS = Counter("bridge_source_gaps", "Sequence gaps detected in a stream", ["provider", "account"])
LAST_EVENT_TIMESTAMP = Gauge(
    "bridge_last_event_timestamp_seconds", "Unix time of the last event received per source", ["provider", "account"]
)
WEBHOOK_REQUESTS = Counter(
    "bridge_webhook_requests",
    "Webhook deliveries answered, by result (published, duplicate, unauthorized, too_large, unavailable, ...)",
    ["provider", "result", "code"],
)
WEBHOOK_IGNORED = Counter(
    "bridge_webhook_ignored",
    "Authenticated deliveries of methods that are not transfers: acknowledged, not published",
    ["provider", "family"],
)
WEBHOOK_SIGNATURE_MATCHES = Counter(
    "bridge_webhook_signature_matches",
    "Valid signatures by the position of the configured secret that matched (rotation progress)",
    ["provider", "secret_index"],
)
WEBHOOK_LATENCY = Histogram(
    "bridge_webhook_latency_seconds",
    "From a webhook request's arrival to its answer",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SOURCE_RESTARTS = Counter(
    "bridge_source_restarts",
    "Sources restarted by the supervisor, by reason (crashed, exited, config_error, stalled)",
    ["source", "reason"],
)
SOURCE_READY = Gauge("bridge_source_ready", "1 while the source is connected or within its start grace", ["source"])
SOURCE_LAST_EVENT_AGE = Gauge(
    "bridge_source_last_event_age_seconds", "Seconds since the source last received an event (set once it has)", ["source"]
)
READY = Gauge("bridge_ready", "1 while /readyz answers 200")
KAFKA_REACHABLE = Gauge("bridge_kafka_reachable", "1 while a Kafka broker answers the pipeline's probe")
QUEUED = Gauge("bridge_queued", "Events waiting behind an earlier, unacknowledged state of the same transfer")
DEDUP_STORE_BYTES = Gauge("bridge_dedup_store_bytes", "Size on disk of the embedded (SQLite) dedup store")
DEDUP_STORE_FAILURES = Counter(
    "bridge_dedup_store_failures", "Writes to the dedup store that failed (full disk, read-only volume); retried"
)
DEDUP_UNPERSISTED = Gauge(
    "bridge_dedup_unpersisted", "States acknowledged by Kafka whose dedup mark the store has not written yet"
)
KAFKA_CLIENT_ERRORS = Counter(
    "bridge_kafka_client_errors",
    "Warnings and errors the Kafka client library logged, repeats left out of the log included, by kind "
    "(connection, metadata, produce, other)",
    ["kind"],
)
BUILD_INFO = Gauge("bridge_build_info", "Always 1; labels say which version runs", ["version"])

# Polled providers (history-only REST). Polls are ``bridge_backfill_runs{trigger="poll"}`` and rows
# read ``bridge_backfill_items``; these add what a provider's request limits need to be seen.
POLL_REQUESTS = Counter(
    "bridge_poll_requests", "Requests a polled source sent, by endpoint", ["provider", "account", "endpoint"]
)
POLL_WEIGHT = Counter(
    "bridge_poll_weight",
    "Request weight a polled source spent by its provider's price list, by budget (ip, uid, api)",
    ["provider", "account", "scope"],
)
POLL_WEIGHT_USED = Gauge(
    "bridge_poll_weight_used",
    "Weight the provider reports used in its current window (response headers), by budget and window",
    ["provider", "account", "scope", "interval"],
)
POLL_RATE_LIMIT_WAITS = Counter(
    "bridge_poll_rate_limit_waits",
    "Requests held back under a provider's limits: budget (would pass the headroom), retry_after (429 answered), ban (418), deferred (to a later cycle)",
    ["provider", "account", "reason"],
)
POLL_TRACKED_OPEN = Gauge(
    "bridge_poll_tracked_open",
    "Non-final transfers remembered per account, re-queried once older than the hot window until final",
    ["provider", "account"],
)
POLL_TRACKING_EXPIRED = Counter(
    "bridge_poll_tracking_expired",
    "Transfers no longer re-queried while still non-final (past the tracking age, or over the cap)",
    ["provider", "account", "reason"],
)

# Open (non-final) transfers the dedup gate knows, refreshed on every scrape. Ages are to the minute.
OPEN_TRANSFERS = Gauge(
    "bridge_open_transfers", "Transfers published in a non-final state and not final since", ["provider", "direction"]
)
OLDEST_OPEN_TRANSFER_AGE = Gauge(
    "bridge_oldest_open_transfer_age_seconds",
    "Age of the oldest open transfer since it was first seen (0: none open), to the minute",
    ["provider", "direction"],
)
STUCK_TRANSFERS = Gauge(
    "bridge_stuck_transfers",
    "Open transfers first seen longer ago than the stuck threshold of their provider and direction",
    ["provider", "direction"],
)
STUCK_THRESHOLD = Gauge(
    "bridge_stuck_threshold_seconds", "Open longer than this counts as stuck (stuck.* settings)", ["provider", "direction"]
)

# Live reload of the configuration (SIGHUP, or a changed config file / secrets directory).
CONFIG_GENERATION = Gauge("bridge_config_generation", "Configuration generation running: 1 at start, +1 per applied reload")
CONFIG_RELOADS = Counter("bridge_config_reloads", "Reload attempts by result (applied, unchanged, refused)", ["result"])

# Cluster mode (several replicas sharing slots through a Kafka consumer group).
CLUSTER_MEMBER = Gauge("bridge_cluster_member", "1 while this replica holds a seat in the group (an assignment)")
CLUSTER_SLOTS_HELD = Gauge("bridge_cluster_slots_held", "Slots this replica runs (sources, ingress, producer)")
CLUSTER_REBALANCES = Counter("bridge_cluster_rebalances", "Group rebalances this replica went through")
CLUSTER_HANDOVER = Histogram(
    "bridge_cluster_handover_seconds",
    "From a slot's assignment to its sources running: producer fenced the previous owner, state restored",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60),
)
CLUSTER_FENCED = Counter(
    "bridge_cluster_fenced_producers", "A slot's transactional producer found itself fenced by a newer owner"
)

@cache
def labelled(metric: Any, *labels: str) -> Any:
    """The metric's child for these labels, looked up once: ``labels()`` returns the same child every
    time but takes a lock and a dict lookup per call, per event on the hot path. Label sets are few
    (providers, directions, accounts) and children are never removed."""
    return metric.labels(*labels)
