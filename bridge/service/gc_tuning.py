"""The cycle collector tuned for a long-running event pipeline.

CPython runs a young-generation collection every 700 net container allocations. The data path
allocates several containers per event (the parsed frame, the event model, its record and
headers), and up to ``pipeline.max_in_flight`` of them stay alive until Kafka acknowledges them,
so they survive, are promoted and are scanned again by the older generations' passes. On the
throughput benchmark that was 10–15 % of the CPU per event. Almost nothing on the data path forms
a reference cycle (reference counting frees it at once), so collecting the young generation every
``YOUNG_THRESHOLD`` allocations instead costs little memory; and what exists once the service runs
(modules, models, settings, the loaded dedup state's containers) is frozen out of every later pass.
"""

from __future__ import annotations

import gc

__all__ = ["tune_for_service", "refreeze", "YOUNG_THRESHOLD"]

YOUNG_THRESHOLD = 50_000
"""Net container allocations between two young-generation collections (CPython's default: 700)."""
OLDER_THRESHOLDS = (20, 10)
"""Young collections per middle one, middle ones per full one (CPython's default: 10, 10)."""


def tune_for_service() -> None:
    """Once the service is running: collect, freeze what is alive, then collect less often.
    Process-wide, so only the service's own process calls it (never a library user or a test)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def refreeze() -> None:
    """After a reload replaced sources: frozen objects are never collected, so the replaced
    sources' reference cycles (tasks, bound methods, health) would stay for good. Unfreeze, collect,
    freeze what is still alive. Nothing to do in a process that never tuned its collector."""
    if not gc.get_freeze_count():
        return
    gc.unfreeze()
    gc.collect()
    gc.freeze()
