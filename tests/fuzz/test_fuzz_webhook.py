"""The OpenXSwitch webhook route, fuzzed over HTTP against a running receiver on a real pipeline.

Bodies (valid, bent, broken, random, oversized), signatures (right, wrong secret, another body's,
missing, garbage, hex/base64/``sha256=``), content types and transfer encodings. Whatever arrives:

* never a 5xx while Kafka is up (503 is for Kafka only), never the receiver's catch-all;
* a wrong or missing signature is always 401, and nothing of it is stored;
* a body over ``max_body_bytes`` is always 413;
* a signed body that is not a JSON object with a ``method`` is 400, with its raw bytes in the DLQ;
* a signed transfer that cannot be normalized is 200 with its raw bytes in the DLQ;
* afterwards nothing is left in flight and the pipeline is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import Phase, given
from hypothesis import strategies as st

from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.signature import HEADER, sign
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from tests.conftest import PipelineFactory
from tests.fuzz.report import fuzz_settings, outcome, tried
from tests.fuzz.strategies import OXS_DEPOSIT, OXS_WITHDRAW, mutated, nested, to_json, wire_bytes

pytestmark = pytest.mark.kafka

SECRET = "whsec-fuzz-4b1d"
OTHER_SECRET = "whsec-not-ours-77"
LIMIT = 16_384
ACK_TIMEOUT = 2.0
TARGET = "openxswitch.webhook"
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]  # every replay costs a Kafka round trip


def _withdrawal(transfer_id: str, **params: Any) -> bytes:
    return to_json({**OXS_WITHDRAW, "params": {**OXS_WITHDRAW["params"], "id": transfer_id, **params}})


# Signed bodies that broke a layer below the route once (a seed corpus the generator also draws from).
NASTY = {
    "raw nested 300 deep": _withdrawal("nasty-deep", extra=nested(300)),
    "lone surrogate in a field": _withdrawal("nasty-surrogate", network="\udfff"),
    "lone surrogate in the wallet id (a Kafka header)": _withdrawal("nasty-wallet", fromWalletId="x\udfff"),
    "amount beyond 64 bits": _withdrawal("nasty-wei", amount=10**21),
    "exponent beyond Decimal": b'{"method":"withdraw.confirmed","params":{"id":"nasty-exp","amount":1e99999999999999999999}}',
    "integer of 4301 digits": b'{"method":"withdraw.confirmed","params":{"id":"nasty-int","amount":' + b"9" * 4301 + b"}}",
    "calendar edge": _withdrawal("nasty-date", updatedAt="0001-01-01T00:00:00+01:00"),
}


class DeadLetters:
    """Follows the DLQ topic from its current end: each expected record must show up, no other."""

    def __init__(self, consumer: AIOKafkaConsumer):
        self.consumer = consumer
        self.unclaimed: list[bytes] = []

    async def expect(self, raw: bytes, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while raw not in self.unclaimed:
            assert loop.time() < deadline, f"no DLQ record with the raw body ({len(raw)} bytes) within {timeout}s"
            for messages in (await self.consumer.getmany(timeout_ms=100)).values():
                self.unclaimed.extend(m.value for m in messages)
        self.unclaimed.remove(raw)
        assert not self.unclaimed, f"{len(self.unclaimed)} DLQ records nobody expected: {self.unclaimed[0][:80]!r}"

    async def expect_none(self) -> None:
        for messages in (await self.consumer.getmany(timeout_ms=0)).values():
            self.unclaimed.extend(m.value for m in messages)
        assert not self.unclaimed, f"an unexpected DLQ record: {self.unclaimed[0][:80]!r}"


@dataclass
class Target:
    url: str
    webhook: OpenXSwitchWebhook = field(repr=False)
    pipeline: Pipeline = field(repr=False)
    http: aiohttp.ClientSession = field(repr=False)
    dlq: DeadLetters = field(repr=False)
    dead_lettered: set[bytes] = field(default_factory=set, repr=False)


@pytest.fixture
async def target(make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings) -> AsyncIterator[Target]:
    pipeline = await make_pipeline()
    webhook = OpenXSwitchWebhook(
        OpenXSwitchConfig(enabled=True, secrets=[SECRET], max_body_bytes=LIMIT, ack_timeout_seconds=ACK_TIMEOUT), pipeline
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, isolation_level="read_committed", enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 2**20, fetch_max_bytes=64 * 2**20,  # DLQ records up to the broker limit
    )
    await consumer.start()
    partitions = [TopicPartition(topics.dead_letter, p) for p in range(topics.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)  # pin "the end" now, before any request
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        url = await stack.enter_async_context(webhook.serve())
        try:
            yield Target(url, webhook, pipeline, http, DeadLetters(consumer))
        finally:
            await consumer.stop()
    await webhook.close()


# -- what gets sent ------------------------------------------------------------------------------

SIGNED = ["hex", "hex", "hex", "HEX", "base64", "base64url", "sha256="]
SIGNATURES = SIGNED + ["wrong-secret", "other-body", "missing", "garbage", "truncated"]


def signature_for(kind: str, body: bytes, garbage: str) -> str | None:
    secret = SECRET.encode()
    if kind == "hex":
        return sign(secret, body)
    if kind == "HEX":
        return sign(secret, body).upper()
    if kind == "base64":
        return sign(secret, body, "base64")
    if kind == "base64url":
        return sign(secret, body, "base64").replace("+", "-").replace("/", "_").rstrip("=")
    if kind == "sha256=":
        return "sha256=" + sign(secret, body)
    if kind == "wrong-secret":
        return sign(OTHER_SECRET.encode(), body)
    if kind == "other-body":
        return sign(secret, body + b" ")
    if kind == "truncated":
        return sign(secret, body)[:-1]
    if kind == "garbage":
        return garbage
    return None


def is_signed(kind: str) -> bool:
    return kind in ("hex", "HEX", "base64", "base64url", "sha256=")


bodies = st.one_of(
    st.sampled_from([OXS_WITHDRAW, OXS_DEPOSIT]).flatmap(wire_bytes),
    st.sampled_from([OXS_WITHDRAW, OXS_DEPOSIT]).flatmap(mutated).map(to_json),
    st.integers(LIMIT + 1, LIMIT * 4).map(lambda n: b"{" + b" " * (n - 2) + b"}"),
    st.integers(LIMIT - 200, LIMIT).map(lambda n: b'{"method":"withdraw.confirmed","pad":"' + b"x" * (n - 40) + b'"}'),
    st.binary(max_size=64),
    st.sampled_from(sorted(NASTY.values())),
)
content_types = st.sampled_from(
    ["application/json"] * 8 + ["application/json; charset=utf-8", "text/plain", "application/json; charset=latin-1", ""]
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)


@fuzz_settings(250, phases=NO_SHRINK)
@given(
    body=bodies,
    signature=st.sampled_from(SIGNATURES),
    garbage=header_text,
    content_type=content_types,
    chunked=st.booleans(),
    extra=st.dictionaries(st.from_regex(r"\AX-[A-Za-z]{1,12}\Z"), header_text, max_size=3),
)
async def test_any_request_gets_the_documented_answer_and_only_dlq_records_for_signed_bodies(
    target: Target, body: bytes, signature: str, garbage: str, content_type: str, chunked: bool, extra: dict[str, str]
) -> None:
    tried(TARGET)
    headers = {**extra}
    if content_type:
        headers["Content-Type"] = content_type
    header = signature_for(signature, body, garbage)
    if header is not None:
        headers[HEADER] = header
    data: Any = body
    if chunked:

        async def stream() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        data = stream()
    async with target.http.post(target.url, data=data, headers=headers) as response:
        status = response.status
        answer = await response.json(content_type=None)
    outcome(TARGET, str(status))

    assert status < 500, (status, answer)
    json_type = content_type in ("application/json", "application/json; charset=utf-8")
    if not json_type:
        assert status == 415, (status, answer)
        return await target.dlq.expect_none()
    if len(body) > LIMIT:
        assert status == 413, (status, answer)
        return await target.dlq.expect_none()
    if not is_signed(signature):
        assert status == 401, (status, answer)
        return await target.dlq.expect_none()
    try:
        document = loads_exact(body)
    except JSONError:
        document = None
    well_formed = isinstance(document, dict) and isinstance(document.get("method"), str) and document["method"].strip()
    if not well_formed:
        assert status == 400, (status, answer)
    stored = status == 400 or answer.get("result") == "dead_lettered"
    if stored and body not in target.dead_lettered:
        target.dead_lettered.add(body)
        await target.dlq.expect(body)
    else:
        await target.dlq.expect_none()


@pytest.mark.parametrize("name", sorted(NASTY))
async def test_a_signed_body_that_broke_a_lower_layer_gets_a_4xx_or_2xx_and_leaves_nothing_stuck(
    target: Target, name: str
) -> None:
    """Each of these once gave a 503 (an escaping exception, or an event no encoder could write,
    which also left the pipeline's window slot and the transfer's queue occupied for good)."""
    body = NASTY[name]
    tried(TARGET)
    headers = {"Content-Type": "application/json", HEADER: sign(SECRET.encode(), body)}
    async with target.http.post(target.url, data=body, headers=headers) as response:
        status, answer = response.status, await response.json(content_type=None)
    assert status < 500, (status, answer)
    if status == 400 or answer.get("result") == "dead_lettered":
        await target.dlq.expect(body)
    assert await target.pipeline.drain(timeout=5), f"{target.pipeline.in_flight} items still in flight"
    assert target.pipeline.ready, target.pipeline.health()


async def test_a_later_state_of_a_transfer_whose_event_could_not_be_written_still_gets_through(target: Target) -> None:
    """An unpublishable event must not block the transfer's per-key queue: the next, ordinary state
    of the same transfer is answered 200 and published."""
    for body in (NASTY["raw nested 300 deep"], _withdrawal("nasty-deep", status="failed")):
        tried(TARGET)
        headers = {"Content-Type": "application/json", HEADER: sign(SECRET.encode(), body)}
        async with target.http.post(target.url, data=body, headers=headers) as response:
            status, answer = response.status, await response.json(content_type=None)
    assert (status, answer.get("result")) == (200, "published")
