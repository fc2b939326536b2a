"""Open and stuck transfers on /metrics: the dedup gate's counts against the ``stuck`` thresholds."""

from __future__ import annotations

from collections.abc import Iterable

from bridge.delivery.open_transfers import OpenTransfers
from bridge.observability import metrics
from bridge.service.settings import StuckSettings

__all__ = ["publish_open_transfers"]


def publish_open_transfers(trackers: OpenTransfers | Iterable[OpenTransfers], settings: StuckSettings, now_s: float) -> None:
    """Set the gauges of every (provider, direction) ever seen open (0 once none is).

    Several trackers (cluster mode: one dedup gate per held slot) add up: counts are summed, the
    oldest age is the largest."""
    rows: dict[tuple[str, str], list[float]] = {}
    for tracker in [trackers] if isinstance(trackers, OpenTransfers) else trackers:
        for row in tracker.summary(now_s, settings.threshold_seconds):
            seen = rows.setdefault((row.provider, row.direction), [0, 0.0, 0, row.threshold_seconds])
            seen[0] += row.open
            seen[1] = max(seen[1], row.oldest_age_seconds)
            seen[2] += row.stuck
    for labels, (open_count, oldest, stuck, threshold) in rows.items():
        metrics.OPEN_TRANSFERS.labels(*labels).set(open_count)
        metrics.OLDEST_OPEN_TRANSFER_AGE.labels(*labels).set(oldest)
        metrics.STUCK_TRANSFERS.labels(*labels).set(stuck)
        metrics.STUCK_THRESHOLD.labels(*labels).set(threshold)
