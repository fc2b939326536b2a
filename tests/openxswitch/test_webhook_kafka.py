"""The receiver end to end against a real broker: what is acknowledged is on Kafka, once.

What every provider must do (lifecycles once and in order, repeats, a delivery the sender retries,
a wrong secret, a non-JSON body, a parser failure, secrets in logs, shutdown) is the conformance
suite's (``tests/conformance``), run on the service shell for OpenXSwitch too. Here: the receiver's
own table of answers, signatures (encodings, tampering, rotation), the allowlist and proxies, body
limits and content types, dead letters and their digest memory, ignored methods, its lifecycle.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from bridge.contract.jsonutil import dumps, loads_exact
from bridge.delivery.settings import TopicSettings
from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.signature import HEADER, sign
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from bridge_testkit.kafka_io import ConsumedRecord
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator
from tests.openxswitch.conftest import OLD_SECRET, SECRET, ReceiverFactory, read_all
from tests.support import fixture_bytes

pytestmark = pytest.mark.kafka

WITHDRAW_CONFIRMED = fixture_bytes("openxswitch/withdraw.confirmed.json")
WITHDRAW_UNCONFIRMED = fixture_bytes("openxswitch/withdraw.unconfirmed.json")


def redelivered(body: bytes, request_id: str) -> bytes:
    """The same state in a new delivery: only ``requestId`` differs."""
    document = loads_exact(body)
    document["requestId"] = request_id
    return dumps(document)


def with_params(body: bytes, **params: Any) -> bytes:
    document = copy.deepcopy(loads_exact(body))
    for name, value in params.items():
        if value is ...:
            document["params"].pop(name)
        else:
            document["params"][name] = value
    return dumps(document)


async def records(kafka_bootstrap: str, topic: str, expect: int) -> list[ConsumedRecord]:
    """All of ``topic``, which must hold exactly ``expect`` records."""
    found = await read_all(kafka_bootstrap, topic)
    assert len(found) == expect, [r.key for r in found]
    return found


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the happy path ------------------------------------------------------------------------------


async def test_amounts_reach_kafka_exactly_as_sent(make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings) -> None:
    receiver = await make_receiver()
    body = WITHDRAW_CONFIRMED.replace(b'"amount": 9', b'"amount": 123456789012345678.901234567890123').replace(
        b'"networkFee": 0.01', b'"networkFee": 0.1'
    )
    assert (await receiver.post(body))[0] == 200
    [record] = await records(kafka_bootstrap, topics.withdrawal, 1)
    value = orjson.loads(record.value)
    assert (value["amount"], value["fee"]) == ("123456789012345678.901234567890123", "0.1")
    assert b'"amount":123456789012345678.901234567890123' in record.value, "raw keeps the provider's digits"


# -- re-deliveries -------------------------------------------------------------------------------


async def test_concurrent_deliveries_of_one_state_are_all_acknowledged_after_one_publish(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    receiver = await make_receiver()
    bodies = [redelivered(WITHDRAW_UNCONFIRMED, f"concurrent-{n}") for n in range(10)]
    answers = await asyncio.gather(*(receiver.post(body) for body in bodies))
    assert sorted(result["result"] for _, result in answers) == ["duplicate"] * 9 + ["published"]
    assert {status for status, _ in answers} == {200}
    assert len(await records(kafka_bootstrap, topics.withdrawal, 1)) == 1


async def test_a_pending_state_arriving_after_the_final_is_acknowledged_and_not_published(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    receiver = await make_receiver()
    assert await receiver.post(WITHDRAW_CONFIRMED) == (200, {"result": "published"})
    assert await receiver.post(WITHDRAW_UNCONFIRMED) == (200, {"result": "stale"})
    [record] = await records(kafka_bootstrap, topics.withdrawal, 1)
    assert orjson.loads(record.value)["status"] == "completed"


async def test_scripted_chaos_loses_nothing_and_publishes_nothing_twice(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    receiver = await make_receiver()
    sim = OpenXSwitchSimulator(receiver.url, SECRET, encoding="base64", concurrency=8, retry_interval=0.1, seed=42)
    sim.lifecycles(withdrawals=15, deposits=15, confirmations=3)
    plan = sim.plan(redeliver=0.4, concurrent=0.2, out_of_order=0.3, others=5)
    report = await sim.send(plan)
    assert report.acked == report.deliveries and report.given_up == 0

    must, may = sim.expected()
    published = await read_all(kafka_bootstrap, topics.withdrawal) + await read_all(kafka_bootstrap, topics.deposit)
    verdict = sim.verdict([orjson.loads(r.value)["event_id"] for r in published])
    assert not verdict.lost, "every state acknowledged before its final is on Kafka"
    assert not verdict.duplicated and not verdict.invented
    assert len(must) >= 60
    assert receiver.webhook.stats["ignored.instant_swap"] == 5


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "post"),
    [
        ("unsigned", {"secret": None}),
        ("garbage header", {"signature": "not-a-signature"}),
        ("other body's signature", {"signature": sign(SECRET.encode(), WITHDRAW_UNCONFIRMED)}),
    ],
)
async def test_unauthenticated_requests_get_401_and_are_neither_published_nor_dead_lettered(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings, case: str, post: dict[str, Any]
) -> None:
    receiver = await make_receiver()
    before = sample("bridge_webhook_requests_total", provider="openxswitch", result="unauthorized", code="401")
    status, answer = await receiver.post(WITHDRAW_CONFIRMED, **post)
    assert status == 401 and answer["result"] == "unauthorized"
    assert sample("bridge_webhook_requests_total", provider="openxswitch", result="unauthorized", code="401") == before + 1

    # a signed malformed body afterwards is the only thing in the DLQ, and nothing was published
    assert (await receiver.post(b"{not json"))[0] == 400
    [dead] = await records(kafka_bootstrap, topics.dead_letter, 1)
    assert dead.value == b"{not json"
    assert await read_all(kafka_bootstrap, topics.withdrawal) == []


async def test_a_body_tampered_after_signing_is_rejected(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver()
    signature = sign(SECRET.encode(), WITHDRAW_CONFIRMED)
    tampered = WITHDRAW_CONFIRMED.replace(b'"amount": 9', b'"amount": 9000')
    assert (await receiver.post(tampered, signature=signature))[0] == 401
    assert (await receiver.post(WITHDRAW_CONFIRMED, signature=signature))[0] == 200


@pytest.mark.parametrize("encoding", ["hex", "base64"])
async def test_hex_and_base64_signatures_are_accepted(make_receiver: ReceiverFactory, encoding: str) -> None:
    receiver = await make_receiver()
    assert await receiver.post(WITHDRAW_CONFIRMED, encoding=encoding) == (200, {"result": "published"})  # type: ignore[arg-type]


async def test_during_rotation_old_and_new_secrets_are_accepted_and_counted(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(secrets=[SECRET, OLD_SECRET])
    before = sample("bridge_webhook_signature_matches_total", provider="openxswitch", secret_index="1")
    assert (await receiver.post(WITHDRAW_UNCONFIRMED, secret=OLD_SECRET))[0] == 200
    assert (await receiver.post(WITHDRAW_CONFIRMED, secret=SECRET))[0] == 200
    assert (await receiver.post(redelivered(WITHDRAW_CONFIRMED, "x"), secret="retired-long-ago"))[0] == 401
    assert sample("bridge_webhook_signature_matches_total", provider="openxswitch", secret_index="1") == before + 1


# -- network and HTTP checks ---------------------------------------------------------------------


async def test_a_source_address_outside_the_allowlist_gets_403(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(allowed_ips=["10.0.0.0/8"])
    assert (await receiver.post(WITHDRAW_CONFIRMED))[0] == 403
    assert receiver.webhook.stats["forbidden"] == 1


async def test_an_allowed_source_address_gets_through(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(allowed_ips=["203.0.113.0/24", "127.0.0.0/8"])
    assert (await receiver.post(WITHDRAW_CONFIRMED))[0] == 200


async def test_behind_a_trusted_proxy_the_forwarded_address_is_checked(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(allowed_ips=["203.0.113.0/24"], trusted_proxies=["127.0.0.1"])
    inside = {"X-Forwarded-For": "198.51.100.9, 203.0.113.20"}
    outside = {"X-Forwarded-For": "203.0.113.20, 198.51.100.9"}
    assert (await receiver.post(WITHDRAW_CONFIRMED, headers=outside))[0] == 403, "only the nearest untrusted hop counts"
    assert (await receiver.post(WITHDRAW_CONFIRMED, headers=inside))[0] == 200


async def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(allowed_ips=["203.0.113.0/24"])
    assert (await receiver.post(WITHDRAW_CONFIRMED, headers={"X-Forwarded-For": "203.0.113.20"}))[0] == 403


async def test_a_declared_oversized_body_gets_413_before_it_is_read(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(max_body_bytes=2048)
    big = WITHDRAW_CONFIRMED.replace(b'"email@openxswitch.com"', b'"' + b"x" * 4096 + b'"')
    status, answer = await receiver.post(big)
    assert (status, answer["result"]) == (413, "too_large")


async def test_a_chunked_body_growing_past_the_limit_gets_413(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    async with receiver.http.post(receiver.url, data=chunks(), headers={"Content-Type": "application/json"}) as response:
        assert response.status == 413
    assert receiver.webhook.stats["too_large"] == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"])
async def test_a_body_that_is_not_json_by_content_type_gets_415(make_receiver: ReceiverFactory, content_type: str) -> None:
    receiver = await make_receiver()
    assert (await receiver.post(WITHDRAW_CONFIRMED, content_type=content_type))[0] == 415


async def test_json_with_a_utf8_charset_is_accepted(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver()
    assert (await receiver.post(WITHDRAW_CONFIRMED, content_type="application/json; charset=UTF-8"))[0] == 200


# -- dead letters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"requestId": "r", "method": "withdraw.confirmed", "params": {"amount": 1', ""),
        (b'{"requestId": "r", "method": "withdraw.confirmed", "params": {"amount": NaN}}', "NaN"),
        (b'{"method": "withdraw.confirmed", "note": "\xff\xfe"}', "not UTF-8"),
        (b"[1, 2, 3]", "not a webhook delivery"),
        (b'{"requestId": "r", "params": {}}', "no 'method'"),
    ],
    ids=["truncated", "nan", "not-utf8", "array", "no-method"],
)
async def test_malformed_bodies_get_400_after_their_raw_bytes_are_in_the_dlq(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings, body: bytes, reason: str
) -> None:
    receiver = await make_receiver()
    status, answer = await receiver.post(body)
    assert (status, answer["result"]) == (400, "malformed")
    [record] = await records(kafka_bootstrap, topics.dead_letter, 1)
    assert record.value == body, "raw bytes, unchanged"
    assert record.headers["dlq_reason"] and reason in record.headers["dlq_reason"].decode()
    assert record.headers["dlq_provider"] == b"openxswitch"
    assert record.headers["dlq_channel"] == b"webhook"


async def test_a_malformed_body_retried_by_the_provider_is_dead_lettered_once(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    receiver = await make_receiver()
    answers = [await receiver.post(b"{oops") for _ in range(3)]
    assert [status for status, _ in answers] == [400, 400, 400]
    assert len(await records(kafka_bootstrap, topics.dead_letter, 1)) == 1
    assert receiver.webhook.stats["malformed.repeat"] == 2


async def test_a_transfer_that_cannot_be_normalized_is_dead_lettered_and_acknowledged(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    receiver = await make_receiver()
    body = with_params(WITHDRAW_CONFIRMED, amount=...)
    assert await receiver.post(body) == (200, {"result": "dead_lettered"})
    [record] = await records(kafka_bootstrap, topics.dead_letter, 1)
    assert record.value == body
    assert record.headers["dlq_channel"] == b"withdraw.confirmed"
    assert b"amount" in record.headers["dlq_reason"]
    assert record.headers["dlq_request_id"] == b"f71516a1a53acbc5a999ef9b6edda4"
    assert record.headers["dlq_account"] == b"6812b103908d2d0d49c7ff79"


def _nested_text(depth: int) -> bytes:
    """``depth`` levels of alternating arrays and objects, as JSON text."""
    opening = "".join("[" if level % 2 == 0 else '{"n":' for level in reversed(range(depth)))
    closing = "".join("]" if level % 2 == 0 else "}" for level in range(depth))
    return (opening + "1" + closing).encode()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"updatedAt": "2025-05-05T00:53:29.206Z"', b'"updatedAt": "0001-01-01T00:00:00+01:00"'),
        (b'"network": "Ethereum"', b'"network": "\\udfff"'),
        (b'"network": "Ethereum"', b'"network": "Ethereum", "extra": ' + _nested_text(300)),
        (b'"fromWalletId": "6812b103908d2d0d49c7ff79"', b'"fromWalletId": "' + b"\\udfff" * 400 + b'"'),
    ],
    ids=["date-before-year-1-in-utc", "lone-surrogate", "nested-300-deep", "surrogate-wallet-id"],
)
async def test_hostile_but_signed_transfers_are_acknowledged_and_kept_never_a_5xx(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings, old: bytes, new: bytes
) -> None:
    """Whether such a delivery can be normalized is the parser's call; the receiver's promise is
    a 2xx only once it is on Kafka — as an event or, with its raw bytes, in the DLQ — and a
    pipeline left clean."""
    receiver = await make_receiver()
    assert old in WITHDRAW_CONFIRMED
    body = WITHDRAW_CONFIRMED.replace(old, new)
    status, answer = await receiver.post(body)
    assert status == 200 and answer["result"] in ("published", "dead_lettered")
    if answer["result"] == "dead_lettered":
        [record] = await records(kafka_bootstrap, topics.dead_letter, 1)
        assert record.value == body and record.headers["dlq_reason"]
    else:
        await records(kafka_bootstrap, topics.withdrawal, 1)
    assert receiver.webhook.pipeline.in_flight == 0 and receiver.webhook.pipeline.ready


async def test_a_number_longer_than_python_reads_meets_the_amount_bound(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    """4301 digits is past int()'s limit, but the body is JSON all the same: the amount's bound
    (MAX_AMOUNT_DIGITS) refuses it like any other form — dead-lettered whole, then 200."""
    receiver = await make_receiver()
    body = WITHDRAW_CONFIRMED.replace(b'"amount": 9', b'"amount": ' + b"9" * 4301)
    assert await receiver.post(body) == (200, {"result": "dead_lettered"})
    [record] = await records(kafka_bootstrap, topics.dead_letter, 1)
    assert record.value == body
    assert b"more than 100 digits" in record.headers["dlq_reason"]


# -- other methods -------------------------------------------------------------------------------


async def test_methods_that_are_not_transfers_are_acknowledged_counted_and_not_stored(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    receiver = await make_receiver()
    swap = fixture_bytes("openxswitch/instant_swap.completed.json")
    internal = swap.replace(b"instant_swap.completed", b"internal_transfer.completed")
    unknown = swap.replace(b"instant_swap.completed", b"kyc.approved")
    before = {f: sample("bridge_webhook_ignored_total", provider="openxswitch", family=f) for f in ("instant_swap", "internal_transfer", "unknown")}
    for body in (swap, internal, unknown):
        assert await receiver.post(body) == (200, {"result": "ignored"})
    after = {f: sample("bridge_webhook_ignored_total", provider="openxswitch", family=f) for f in before}
    assert {f: after[f] - before[f] for f in before} == {"instant_swap": 1, "internal_transfer": 1, "unknown": 1}

    assert (await receiver.post(b"{sentinel"))[0] == 400
    [dead] = await records(kafka_bootstrap, topics.dead_letter, 1)
    assert dead.value == b"{sentinel", "ignored methods are not dead-lettered"
    for topic in (topics.deposit, topics.withdrawal):
        assert await read_all(kafka_bootstrap, topic) == []


# -- lifecycle -----------------------------------------------------------------------------------


async def test_after_stop_accepting_deliveries_get_503(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver()
    receiver.webhook.stop_accepting()
    assert (await receiver.post(WITHDRAW_CONFIRMED))[0] == 503
    assert not receiver.webhook.health.connected


async def test_a_closed_pipeline_means_503_never_2xx(make_receiver: ReceiverFactory, make_pipeline: Any) -> None:
    pipeline = await make_pipeline()
    receiver = await make_receiver(pipeline=pipeline)
    await pipeline.close(timeout=5)
    status, answer = await receiver.post(WITHDRAW_CONFIRMED)
    assert (status, answer["result"]) == (503, "shutting_down")


async def test_mounts_on_an_existing_application_beside_other_routes(make_pipeline: Any) -> None:
    webhook = OpenXSwitchWebhook(OpenXSwitchConfig(enabled=True, secrets=[SECRET], path="/hooks/oxs"), await make_pipeline())
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    webhook.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            signed = {"Content-Type": "application/json", HEADER: sign(SECRET.encode(), WITHDRAW_CONFIRMED)}
            async with http.post(f"http://{host}:{port}/hooks/oxs", data=WITHDRAW_CONFIRMED, headers=signed) as response:
                assert response.status == 200
            async with http.get(f"http://{host}:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://{host}:{port}/hooks/oxs") as response:
                assert response.status == 405
    finally:
        await runner.cleanup()
    assert not webhook.health.connected, "the application's shutdown stops the receiver"


async def test_health_reflects_mounting_and_the_last_event(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver()
    assert receiver.webhook.health.connected
    assert receiver.webhook.health.last_event_at is None
    await receiver.post(WITHDRAW_CONFIRMED)
    assert receiver.webhook.health.last_event_at is not None


async def test_run_reports_a_served_route_as_connected_again_after_a_restart(make_receiver: ReceiverFactory) -> None:
    receiver = await make_receiver()
    receiver.webhook.health.mark_disconnected("run was cancelled")  # what a supervisor does on restart
    running = asyncio.create_task(receiver.webhook.run())
    try:
        for _ in range(50):
            if receiver.webhook.health.connected:
                break
            await asyncio.sleep(0.02)
        assert receiver.webhook.health.connected
        assert (await receiver.post(WITHDRAW_CONFIRMED))[0] == 200
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
