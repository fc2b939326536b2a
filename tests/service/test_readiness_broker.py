"""/readyz follows the broker: 200 while Kafka answers, 503 with the reason when it stops, 200 again
when it returns — on a throwaway broker this test may stop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.kafka.settings import KafkaSettings
from bridge_testkit.kafka_broker import LocalKafka
from tests.service.support import eventually, running, service_settings

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
        reason="readiness flipping stops its own broker; KAFKA_BOOTSTRAP_SERVERS points to an external "
        "cluster this test must not stop (unset it to run this test on a local throwaway broker)",
    ),
]


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    kafka = LocalKafka()
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.cleanup()


async def test_readiness_flips_with_the_broker_and_health_stays_up(tmp_path: Path, broker: LocalKafka) -> None:
    settings = service_settings(tmp_path, KafkaSettings(bootstrap_servers=broker.bootstrap, request_timeout_ms=3000))
    async with running(settings) as bridge:

        async def readiness(expected: int) -> bool:
            status, _ = await bridge.get_json("/readyz")
            return status == expected

        await eventually(lambda: readiness(200), what="ready with the broker up")
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: readiness(503), timeout=20, what="not ready once the broker stopped")
        status, detail = await bridge.get_json("/readyz")
        health, _ = await bridge.get_json("/healthz")
        assert (status, detail["kafka"]["broker_reachable"], health) == (503, False, 200)
        await asyncio.to_thread(broker.start)
        await eventually(lambda: readiness(200), timeout=30, what="ready again once the broker returned")
        _, detail = await bridge.get_json("/readyz")
        assert detail["kafka"]["broker_reachable"] is True
