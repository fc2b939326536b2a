"""Retries are paced and capped: delays never exceed their ceiling, however long a failure lasts."""

from __future__ import annotations

import random

import pytest

from bridge.ingest.backoff import Backoff
from tests.resources.figures import record


def test_backoff_delays_stay_within_the_ceiling_for_ten_thousand_attempts() -> None:
    """A venue that accepts and hangs up (or is down) for hours: the source keeps trying, paced.

    ``initial * factor ** attempt`` overflows a float at attempt 1024 (2.0 ** 1024): the
    OverflowError ended the source's run loop (seen by the 1,000-reconnect test).
    """
    backoff = Backoff(initial=0.5, maximum=30.0, factor=2.0, min_uptime=10.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10_000)]
    assert max(delays) <= 30.0
    assert min(delays[20:]) >= 15.0  # full jitter over the upper half of the ceiling
    record(f"backoff: 10,000 attempts, delays within [{min(delays[20:]):.1f}, {max(delays):.1f}] s after the ramp")


@pytest.mark.parametrize("factor", [1.5, 2.0, 3.0, 10.0])
def test_backoff_never_raises_whatever_the_factor(factor: float) -> None:
    backoff = Backoff(initial=0.001, maximum=0.004, factor=factor, min_uptime=60.0)
    for _ in range(5000):
        assert 0 < backoff.next_delay() <= 0.004


def test_backoff_resets_only_after_a_connection_lived_min_uptime() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, min_uptime=0.0, rng=random.Random(2))
    for _ in range(5):
        backoff.next_delay()
    backoff.connected()
    assert backoff.next_delay() <= 1.0
