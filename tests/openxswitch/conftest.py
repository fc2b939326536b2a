"""Fixtures of the OpenXSwitch tests: a receiver on a real pipeline, served on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.signature import HEADER, Encoding, sign
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from bridge_testkit.kafka_io import ConsumedRecord
from tests.conftest import PipelineFactory

SECRET = "whsec-current-7f3a"
OLD_SECRET = "whsec-previous-19bc"


class Receiver:
    """A running webhook on a real pipeline, plus a client that signs like the provider."""

    def __init__(self, webhook: OpenXSwitchWebhook, url: str, http: aiohttp.ClientSession):
        self.webhook = webhook
        self.url = url
        self.http = http

    async def post(
        self,
        body: bytes,
        *,
        secret: str | None = SECRET,
        encoding: Encoding = "hex",
        signature: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body``; signed with ``secret`` unless ``signature`` is given (None secret = unsigned)."""
        sent = {"Content-Type": content_type, **(headers or {})}
        if signature is not None:
            sent[HEADER] = signature
        elif secret is not None:
            sent[HEADER] = sign(secret.encode(), body, encoding)
        async with self.http.post(self.url, data=body, headers=sent) as response:
            return response.status, await response.json(content_type=None)


ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def make_receiver(make_pipeline: PipelineFactory) -> AsyncIterator[ReceiverFactory]:
    """``await make_receiver(**config)``: a pipeline on the test's topics and a webhook serving it."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def factory(*, pipeline: Any = None, **config: Any) -> Receiver:
            options = {"enabled": True, "secrets": [SECRET], **config}
            webhook = OpenXSwitchWebhook(OpenXSwitchConfig(**options), pipeline or await make_pipeline())
            url = await stack.enter_async_context(webhook.serve())
            return Receiver(webhook, url, http)

        yield factory


async def read_all(bootstrap: str, topic: str, *, timeout: float = 10.0) -> list[ConsumedRecord]:
    """Everything a topic holds right now, read up to its end offsets (``read_committed``).

    The receiver answers 2xx only after Kafka's ack, so once a request was answered its record
    is below the end offset: no waiting for stragglers, and an extra record cannot hide.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            assert loop.time() < deadline, f"topic {topic} not found"
            await consumer._client.force_metadata_update()  # no public API; the topic may be brand new
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        await consumer.seek_to_beginning(*assigned)
        found: list[ConsumedRecord] = []
        for partition in assigned:
            while await consumer.position(partition) < ends[partition]:
                assert loop.time() < deadline, f"could not read {topic} up to its end in {timeout}s"
                for message in (await consumer.getmany(partition, timeout_ms=200)).get(partition, []):
                    found.append(
                        ConsumedRecord(message.topic, message.partition, message.offset, message.key, message.value, dict(message.headers or ()))
                    )
        return found
    finally:
        await consumer.stop()
