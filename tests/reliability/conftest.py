"""Reliability tests that stop and restart a broker use one of their own, never the session's."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bridge_testkit.kafka_broker import LocalKafka


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    """A broker these tests may stop and start without disturbing the shared one."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TRANSFER_BRIDGE_NO_LOCAL_KAFKA"):
        pytest.skip("local broker disabled; cannot stop an external cluster")
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()
