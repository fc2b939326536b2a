"""Open and stuck transfers on /metrics: the dedup gate's counts against the ``stuck`` thresholds."""

from __future__ import annotations

from bridge.delivery.open_transfers import OpenTransfers
from bridge.observability import metrics
from bridge.service.settings import StuckSettings

__all__ = ["publish_open_transfers"]


def publish_open_transfers(tracker: OpenTransfers, settings: StuckSettings, now_s: float) -> None:
    """Set the gauges of every (provider, direction) ever seen open (0 once none is)."""
    for row in tracker.summary(now_s, settings.threshold_seconds):
        labels = (row.provider, row.direction)
        metrics.OPEN_TRANSFERS.labels(*labels).set(row.open)
        metrics.OLDEST_OPEN_TRANSFER_AGE.labels(*labels).set(row.oldest_age_seconds)
        metrics.STUCK_TRANSFERS.labels(*labels).set(row.stuck)
        metrics.STUCK_THRESHOLD.labels(*labels).set(row.threshold_seconds)
