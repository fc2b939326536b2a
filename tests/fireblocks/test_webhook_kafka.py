"""The Fireblocks receiver on a real broker: what is Fireblocks' own in its answers — the out-of-order
rule, event types acknowledged but not published, v2 keys fetched on an unknown kid, a JWKS outage
answered 503 (retried) rather than 401 (lost)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.fireblocks.webhook import FireblocksWebhook
from bridge_testkit.fireblocks.simulator import WORKSPACE, FireblocksSimulator, pem_private, pem_public
from bridge_testkit.kafka_io import read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[FireblocksSimulator]:
    simulator = FireblocksSimulator(seed=9)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def receiver(
    sim: FireblocksSimulator, make_pipeline: Callable[..., Awaitable[Pipeline]], tmp_path: Path
) -> AsyncIterator[FireblocksWebhook]:
    (tmp_path / "legacy.pem").write_bytes(pem_public(sim.legacy_key))
    config = FireblocksConfig(
        enabled=True, workspace_id=WORKSPACE, legacy_public_keys=[tmp_path / "legacy.pem"], jwks_url=sim.jwks_url, jwks_min_refetch_s=0.0
    )
    webhook = FireblocksWebhook(config, await make_pipeline())
    async with webhook.serve() as url:
        sim.url = url
        yield webhook
    await webhook.keys.close()


async def post(sim: FireblocksSimulator, delivery: object) -> int:
    async with aiohttp.ClientSession() as session:
        return await sim.post(session, delivery)  # type: ignore[arg-type]


async def test_a_state_older_than_the_last_accepted_one_is_acknowledged_but_not_published(
    sim: FireblocksSimulator, receiver: FireblocksWebhook, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    transaction = sim.create("withdrawal")
    for index in (0, 2, 1, 3):  # PENDING_SIGNATURE (1) arrives after BROADCASTING (2)
        assert await post(sim, sim.delivery(transaction, index)) == 200
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=3, timeout=10)
    assert [r.value.count(b'"provider_status":"' + s.encode()) for r, s in zip(records, ("SUBMITTED", "BROADCASTING", "CONFIRMING"), strict=True)] == [1, 1, 1]
    assert receiver.stats["ignored.out_of_order"] == 1 and receiver.newest.dropped == 1


async def test_other_event_types_and_foreign_transfers_are_acknowledged_and_counted_never_published(
    sim: FireblocksSimulator, receiver: FireblocksWebhook, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    vault_added = b'{"type":"VAULT_ACCOUNT_ADDED","tenantId":"%s","timestamp":1761906000000,"data":{"id":"42"}}' % WORKSPACE.encode()
    approval = b'{"id":"n1","eventType":"transaction.approval_status.updated","workspaceId":"%s","createdAt":1,"data":{}}' % WORKSPACE.encode()
    assert await post(sim, sim.signed(vault_added, 1)) == 200
    assert await post(sim, sim.signed(approval, 2)) == 200
    assert receiver.stats["ignored.vault"] == 1 and receiver.stats["ignored.transaction_approval"] == 1
    assert await read_topic(kafka_bootstrap, topics.withdrawal, timeout=1, idle=0.5) == []


async def test_a_v2_delivery_signed_with_a_rotated_key_fetches_the_jwks_again_and_is_accepted(
    sim: FireblocksSimulator, receiver: FireblocksWebhook
) -> None:
    transaction = sim.create("deposit", version=2)
    assert await post(sim, sim.delivery(transaction, 0)) == 200
    fetched = sim.jwks_requests
    sim.rotate()
    assert await post(sim, sim.delivery(transaction, 1)) == 200
    assert sim.jwks_requests == fetched + 1


async def test_an_unfetchable_jwks_is_answered_503_and_a_bad_signature_401(sim: FireblocksSimulator, receiver: FireblocksWebhook) -> None:
    transaction = sim.create("deposit", version=2)
    sim.jwks_down = True
    assert await post(sim, sim.delivery(transaction, 0)) == 503
    sim.jwks_down = False
    forged = sim.delivery(transaction, 0)
    forged.body = forged.body.replace(b'"CONFIRMING"', b'"COMPLETED"')
    assert await post(sim, forged) == 401
    assert receiver.stats["jwks_unavailable"] == 1 and receiver.stats["unauthorized.invalid"] == 1
    assert await post(sim, sim.delivery(transaction, 0)) == 200  # the sender's retry lands


@pytest.mark.parametrize(("warmup", "published_after_restart"), [(60.0, 0), (0.0, 1)])
async def test_a_state_older_than_one_published_before_a_restart_is_not_published_after_it(
    sim: FireblocksSimulator,
    make_pipeline: Callable[..., Awaitable[Pipeline]],
    tmp_path: Path,
    kafka_bootstrap: str,
    topics: TopicSettings,
    warmup: float,
    published_after_restart: int,
) -> None:
    """The ordering memory dies with the process; the start-up backfill pass refills it before a
    delivery is taken. Without the warm-up (0) the late state goes out after the newer one."""
    (tmp_path / "legacy.pem").write_bytes(pem_public(sim.legacy_key))
    (tmp_path / "api.key").write_bytes(pem_private(sim.api_user_key))
    config = FireblocksConfig(
        enabled=True, workspace_id=WORKSPACE, legacy_public_keys=[tmp_path / "legacy.pem"], jwks_url=sim.jwks_url,
        api_key=sim.api_key, api_private_key_file=tmp_path / "api.key", base_url=sim.base_url, backfill_interval=300.0,
        rest_rate_per_second=100.0, ordering_warmup_seconds=warmup,
    )  # fmt: skip
    transaction = sim.create("withdrawal")
    sim.rest_delay = 1.0  # the late delivery arrives while the start-up pass is still reading
    late = sim.delivery(transaction, 1)  # PENDING_SIGNATURE, its answer never got through before the kill
    pipeline = await make_pipeline()
    for life, indexes in enumerate(((0, 2), ())):  # life 0 publishes SUBMITTED, BROADCASTING; life 1 gets the late one
        webhook = FireblocksWebhook(config, pipeline)
        running = asyncio.create_task(webhook.run())
        async with webhook.serve() as url:
            sim.url = url
            for index in indexes:
                delivery = sim.delivery(transaction, index)
                sim.reveal(delivery)
                assert await post(sim, delivery) == 200
            if life == 1:
                assert await post(sim, late) == 200
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=2 + published_after_restart, timeout=10, idle=1.0)
    statuses = [json.loads(r.value)["provider_status"] for r in records]
    assert statuses[:2] == ["SUBMITTED", "BROADCASTING"]
    assert statuses[2:] == ["PENDING_SIGNATURE"] * published_after_restart
    assert webhook.stats["ignored.out_of_order"] == 1 - published_after_restart


async def test_an_unsigned_delivery_during_the_ordering_warm_up_is_refused_at_once_not_held(
    sim: FireblocksSimulator, make_pipeline: Callable[..., Awaitable[Pipeline]], tmp_path: Path
) -> None:
    """Only an authenticated sender may make the receiver wait for its warm-up: a forged or unsigned
    body is answered 401 straight away, a signed one is held (here: 503 after ``ack_timeout_seconds``, 2 s)."""
    (tmp_path / "legacy.pem").write_bytes(pem_public(sim.legacy_key))
    (tmp_path / "api.key").write_bytes(pem_private(sim.api_user_key))
    config = FireblocksConfig(
        enabled=True, workspace_id=WORKSPACE, legacy_public_keys=[tmp_path / "legacy.pem"], jwks_url=sim.jwks_url,
        api_key=sim.api_key, api_private_key_file=tmp_path / "api.key", base_url=sim.base_url, backfill_interval=300.0,
        rest_rate_per_second=100.0, ordering_warmup_seconds=60.0, ack_timeout_seconds=2.0,
    )  # fmt: skip
    sim.rest_delay = 10.0  # the start-up pass is still reading for the whole test
    transaction = sim.create("withdrawal")
    webhook = FireblocksWebhook(config, await make_pipeline())
    running = asyncio.create_task(webhook.run())
    try:
        async with webhook.serve() as url:
            sim.url = url
            forged = sim.delivery(transaction, 0)
            forged.body = forged.body.replace(b'"SUBMITTED"', b'"COMPLETED"')
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await post(sim, forged) == 401
            assert loop.time() - began < 1.5  # not held for the ack timeout
            began = loop.time()
            assert await post(sim, sim.delivery(transaction, 0)) == 503
            assert loop.time() - began >= 1.9
            assert webhook.stats["warming_up"] == 1 and webhook.stats["unauthorized.invalid"] == 1
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await webhook.keys.close()


async def test_a_replica_that_does_not_lead_the_backfill_takes_signed_deliveries_without_waiting_for_a_warm_up(
    sim: FireblocksSimulator, make_pipeline: Callable[..., Awaitable[Pipeline]], tmp_path: Path
) -> None:
    """Cluster mode: the REST backfill runs on the slot holder only, so another replica's ordering
    memory is never refilled by a pass of its own; it must not hold deliveries for one (it answered
    503 to each for ``ordering_warmup_seconds`` after every start)."""
    (tmp_path / "legacy.pem").write_bytes(pem_public(sim.legacy_key))
    (tmp_path / "api.key").write_bytes(pem_private(sim.api_user_key))
    config = FireblocksConfig(
        enabled=True, workspace_id=WORKSPACE, legacy_public_keys=[tmp_path / "legacy.pem"], jwks_url=sim.jwks_url,
        api_key=sim.api_key, api_private_key_file=tmp_path / "api.key", base_url=sim.base_url, backfill_interval=300.0,
        rest_rate_per_second=100.0, ordering_warmup_seconds=60.0, ack_timeout_seconds=2.0,
    )  # fmt: skip
    transaction = sim.create("withdrawal")
    webhook = FireblocksWebhook(config, await make_pipeline())
    webhook.leads_backfill = lambda: False
    running = asyncio.create_task(webhook.run())
    try:
        async with webhook.serve() as url:
            sim.url = url
            assert await post(sim, sim.delivery(transaction, 0)) == 200
            assert webhook.stats["warming_up"] == 0 and webhook.backfill_stats["passes"] == 0
            assert not sim.rest_requests
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await webhook.keys.close()
