"""What every provider must do, checked the same way for each: the real service shell (``BridgeApp``
with the provider's configured source) against the provider's simulator and a real broker, on the
test's own topics, read back like a consumer would.

Each test runs for every registered provider with a harness (``bridge_testkit.<name>.harness``);
tests marked ``requires(...)`` only for the providers with those capabilities.
"""

from __future__ import annotations

import asyncio
import json
import logging
from itertools import pairwise
from typing import Any

import pytest

from bridge.ingest.plugins import plugin_for
from bridge.observability.logs import JsonFormatter
from bridge.service.app import ExitCode
from bridge.service.dlq.cli import replay_dead_letters
from bridge_testkit.conformance import ProviderHarness, eventually, leaked
from tests.conformance.support import (
    Bridge,
    FailAfterFirstPage,
    FailOnce,
    PipelineCounts,
    Topics,
    partitions_per_key,
    published_states,
    restarts,
    source_of,
    state_count,
)

pytestmark = pytest.mark.kafka


def stream_settings(harness: ProviderHarness, **settings: Any) -> dict[str, Any]:
    """Keys of the stream engine's settings (backfill, reconnect pacing): only streams have them."""
    return settings if harness.kind == "stream" else {}


def account_of(harness: ProviderHarness) -> str:
    """Stream sources are named ``<provider>:<account>``."""
    return harness.source_name.partition(":")[2]


# -- delivery ----------------------------------------------------------------------------------------


async def test_every_state_of_scripted_lifecycles_arrives_once_and_in_order_per_key(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics
) -> None:
    async with bridge(harness.section()) as service:
        await harness.ready(service.app)
        await harness.run_lifecycles(harness.create(8), repeat_every=3)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        assert await service.stop() == ExitCode.OK
    records = await kafka.events()
    assert published_states(harness, records) == truth
    assert all(len(partitions) == 1 for partitions in partitions_per_key(records).values())
    assert await kafka.size("dead_letter") == 0


async def test_identical_repeats_of_a_state_are_published_once(harness: ProviderHarness, bridge: Bridge, kafka: Topics) -> None:
    before = PipelineCounts.now(harness.name)
    async with bridge(harness.section(**stream_settings(harness, backfill_enabled=False))) as service:
        await harness.ready(service.app)
        [transfer] = harness.create(1)
        await harness.advance(transfer)
        await harness.repeat(transfer, times=4)
        await eventually(lambda: (PipelineCounts.now(harness.name) - before).received >= 5, what="the state and its 4 repeats reached the pipeline")
        assert await service.stop() == ExitCode.OK  # drains: a repeat still in the pipeline would land now
    counts = PipelineCounts.now(harness.name) - before
    assert (counts.received, counts.published, counts.deduplicated) == (5, 1, 4)
    assert published_states(harness, await kafka.events()) == harness.truth()


# -- gaps ----------------------------------------------------------------------------------------------


@pytest.mark.requires("backfill")
async def test_states_that_changed_while_the_connection_was_down_arrive_through_backfill(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics
) -> None:
    async with bridge(harness.section(backfill_interval=60)) as service:  # only the reconnect triggers a pass
        await harness.ready(service.app)
        source = source_of(service.app, harness)
        await eventually(lambda: source.health.detail.get("backfill_last_success") is not None, what="the start-up backfill")
        transfers = harness.create(2)
        for transfer in transfers:
            await harness.advance(transfer)
        await kafka.wait_for(events=2)
        gap = await harness.gap(transfers)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        assert await service.stop() == ExitCode.OK
    records = [json.loads(record.value) for record in await kafka.events()]
    assert published_states(harness, await kafka.events()) == truth
    via = {(r["key"], harness.state_of(r)): r["source"]["via"] for r in records}
    assert {via[(g.key, g.state)] for g in gap} == {"backfill"}
    assert sorted(v for (key, state), v in via.items() if all((key, state) != (g.key, g.state) for g in gap)) == ["push", "push"]
    for key in truth:  # a backfilled row names the same account as the pushes of its transfer
        assert len({json.dumps(r["account"], sort_keys=True) for r in records if r["key"] == key}) == 1


@pytest.mark.requires("poll")
async def test_states_that_changed_while_polls_failed_arrive_with_a_later_poll(harness: ProviderHarness, bridge: Bridge, kafka: Topics) -> None:
    async with bridge(harness.section()) as service:
        await harness.ready(service.app)
        source = source_of(service.app, harness)
        transfers = harness.create(2)
        for transfer in transfers:
            await harness.advance(transfer)
        await kafka.wait_for(events=2)
        failures = source.stats["poll_failures"]  # type: ignore[attr-defined]
        gap = await harness.gap(transfers)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        await eventually(lambda: source.health.detail["poll_error"] is None, what="a complete cycle after the failed ones")
        assert await service.stop() == ExitCode.OK
    assert source.stats["poll_failures"] > failures, "no poll failed: the gap was not one"  # type: ignore[attr-defined]
    records = [json.loads(record.value) for record in await kafka.events()]
    assert published_states(harness, await kafka.events()) == truth
    assert {(g.key, g.state) for g in gap} <= {(r["key"], harness.state_of(r)) for r in records if r["source"]["via"] == "poll"}


@pytest.mark.requires("sender_retries")
async def test_a_delivery_that_was_not_acknowledged_is_retried_by_the_sender_and_lands_once(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics
) -> None:
    async with bridge(harness.section()) as service:
        await harness.ready(service.app)
        transfers = harness.create(2)
        for transfer in transfers:
            await harness.advance(transfer)
        gap = await harness.gap(transfers)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        assert await service.stop() == ExitCode.OK
    assert published_states(harness, await kafka.events()) == truth
    assert all(g.attempts[0] == 0 and len(g.attempts) >= 2 and 200 <= g.attempts[-1] < 300 for g in gap), gap


async def test_a_run_with_forced_disconnects_or_lost_answers_loses_nothing(harness: ProviderHarness, bridge: Bridge, kafka: Topics) -> None:
    async with bridge(harness.section(**stream_settings(harness, backfill_interval=0.5))) as service:
        await harness.ready(service.app)
        await harness.run_lifecycles(harness.create(9), faults=True, repeat_every=5)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        assert await service.stop() == ExitCode.OK
    assert published_states(harness, await kafka.events()) == truth
    assert await kafka.size("dead_letter") == 0


# -- credentials -------------------------------------------------------------------------------------


@pytest.mark.requires("config_error_pacing")
async def test_a_wrong_secret_is_a_configuration_error_naming_the_account_retried_slowly_while_other_accounts_flow(
    harness: ProviderHarness, bridge: Bridge
) -> None:
    retry = 0.3
    async with bridge(harness.wrong_secret_section(config_error_retry=retry, backfill_enabled=False)) as service:
        await eventually(lambda: len(harness.attempts()) >= 4, what="four attempts with the wrong secret")
        status, readiness = await service.get_json("/readyz")
        last_error = source_of(service.app, harness).health.last_error or ""
    gaps = [later - earlier for earlier, later in pairwise(harness.attempts()[:4])]
    assert all(retry * 0.85 <= gap <= retry * 1.1 + 0.25 for gap in gaps), gaps  # the configuration pace (±10 % jitter), no tight loop
    assert status == 503
    detail = readiness["sources"][harness.source_name]
    assert detail["config_error"] is True and detail["ready"] is False
    assert f"'{account_of(harness)}'" in detail["last_error"] and f"'{account_of(harness)}'" in last_error
    assert leaked(harness.secrets(), last_error + json.dumps(readiness)) == set()
    others = [view for name, view in readiness["sources"].items() if name != harness.source_name]
    assert others and all(view["ready"] for view in others)


@pytest.mark.requires("webhook_auth")
async def test_a_delivery_signed_with_a_wrong_secret_gets_401_and_is_neither_published_nor_dead_lettered(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics
) -> None:
    async with bridge(harness.wrong_secret_section()) as service:
        await harness.ready(service.app)
        [transfer] = harness.create(1)
        assert await harness.post_state(transfer) == 401
        assert await service.stop() == ExitCode.OK  # drains: whatever had been accepted would be in Kafka now
    assert await kafka.sizes() == {"deposit": 0, "withdrawal": 0, "dead_letter": 0}


# -- connections -------------------------------------------------------------------------------------


@pytest.mark.requires("hangup")
async def test_a_venue_that_hangs_up_right_after_every_open_is_retried_at_the_backoff_pace_never_in_a_tight_loop(
    harness: ProviderHarness, bridge: Bridge
) -> None:
    """The backoff only resets after ``min_uptime``: against a venue that accepts and hangs up at
    once, the delays keep doubling (jittered within [c/2, c], c = initial · 2ⁿ)."""
    initial = 0.05
    harness.hang_up_after_open()
    async with bridge(harness.section(reconnect_initial=initial, reconnect_max=5.0, min_uptime=2.0, backfill_enabled=False)):
        await eventually(lambda: len(harness.attempts()) >= 5, what="five connection attempts")
    gaps = [later - earlier for earlier, later in pairwise(harness.attempts()[:5])]
    assert all(0.9 * initial * 2**n / 2 <= gap <= initial * 2**n + 0.5 for n, gap in enumerate(gaps)), gaps


# -- bad input and broken code -----------------------------------------------------------------------


async def test_a_payload_that_is_not_json_reaches_the_dlq_with_its_raw_bytes_and_the_source_goes_on(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics
) -> None:
    async with bridge(harness.section(**stream_settings(harness, backfill_enabled=False))) as service:
        await harness.ready(service.app)
        raw = await harness.send_not_json()
        [transfer] = harness.create(1)
        await harness.advance(transfer)
        await kafka.wait_for(events=1, dead_letters=1)
        assert await service.stop() == ExitCode.OK
    [letter] = await kafka.dead_letters()
    assert letter.value == raw
    assert letter.headers.get("dlq_reason", b"").strip()
    assert letter.headers.get("dlq_provider") == plugin_for(harness.name).provider.value.encode()
    assert letter.headers.get("dlq_channel", b"").strip()
    assert published_states(harness, await kafka.events()) == harness.truth()


async def test_an_exception_inside_the_parser_costs_one_payload_never_the_source(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bridge(harness.section(**stream_settings(harness, backfill_enabled=False))) as service:
        await harness.ready(service.app)
        broken = FailOnce.patch(monkeypatch, *harness.parse_target)
        [transfer] = harness.create(1)
        await harness.advance(transfer)  # the parser raises on this state
        await harness.advance(transfer)  # and reads the next one
        await kafka.wait_for(events=1, dead_letters=1)
        restarted = restarts(service.app)
        assert await service.stop() == ExitCode.OK
    assert (broken.raised, restarted) == (1, 0) and broken.calls >= 2
    [letter] = await kafka.dead_letters()
    assert b"RuntimeError" in letter.headers["dlq_reason"]
    [(key, states)] = harness.truth().items()
    assert published_states(harness, await kafka.events()) == {key: states[1:]}


async def test_what_a_failing_parser_dead_lettered_is_published_by_dlq_replay_once_the_parser_works(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bridge(harness.section(**stream_settings(harness, backfill_enabled=False))) as service:
        await harness.ready(service.app)
        broken = FailOnce.patch(monkeypatch, *harness.parse_target)
        [transfer] = harness.create(1)
        await harness.advance(transfer)  # the parser raises on this state: its payload is dead-lettered
        await kafka.wait_for(dead_letters=1)
        settings = service.app.settings
        assert await service.stop() == ExitCode.OK
    assert broken.raised == 1

    report = await replay_dead_letters(settings)  # the parser works again (it failed once)

    assert (report.read, report.normalized, report.failing) == (1, 1, 0), report.text()
    assert sum(report.events.values()) >= 1 and set(report.events) <= {"published", "duplicate"}, report.text()
    assert published_states(harness, await kafka.events()) == harness.truth()
    assert (await replay_dead_letters(settings)).read == 0, "the progress was committed"


@pytest.mark.requires("backfill")
async def test_an_exception_inside_a_backfill_pass_never_ends_recovery(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bridge(harness.section(backfill_interval=60, backfill_retry=0.2)) as service:
        await harness.ready(service.app)
        source = source_of(service.app, harness)
        await eventually(lambda: source.health.detail.get("backfill_last_success") is not None, what="the start-up backfill")
        broken = FailOnce(source.history)  # type: ignore[attr-defined]
        monkeypatch.setattr(source, "history", broken)  # the next history read raises
        transfers = harness.create(2)
        for transfer in transfers:
            await harness.advance(transfer)
        await kafka.wait_for(events=2)
        gap = await harness.gap(transfers)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        restarted = restarts(service.app)
        assert await service.stop() == ExitCode.OK
    assert (broken.raised, restarted) == (1, 0) and broken.calls >= 2  # a later pass read the history
    records = [json.loads(record.value) for record in await kafka.events()]
    assert published_states(harness, await kafka.events()) == truth
    assert {r["source"]["via"] for r in records if (r["key"], harness.state_of(r)) in {(g.key, g.state) for g in gap}} == {"backfill"}


@pytest.mark.requires("poll")
async def test_an_exception_inside_a_poll_never_ends_polling(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cycle breaks after its first page was handed over: the failure is counted, later cycles
    read what the broken one did not, and the source is not restarted."""
    async with bridge(harness.section()) as service:
        await harness.ready(service.app)
        source = source_of(service.app, harness)
        transfers = harness.create(2)
        await harness.advance(transfers[0])
        await kafka.wait_for(events=1)
        failures = source.stats["poll_failures"]  # type: ignore[attr-defined]
        broken = FailAfterFirstPage(source.poll)  # type: ignore[attr-defined]
        monkeypatch.setattr(source, "poll", broken)  # the next cycle raises midway
        await eventually(lambda: broken.raised == 1, what="the broken poll cycle")
        for transfer in transfers:
            await harness.advance(transfer)
        truth = harness.truth()
        await kafka.wait_for(events=state_count(truth))
        await eventually(lambda: source.health.detail["poll_error"] is None, what="a complete cycle after the broken one")
        restarted = restarts(service.app)
        assert await service.stop() == ExitCode.OK
    assert (broken.raised, restarted) == (1, 0) and broken.calls >= 2  # later cycles polled again
    assert source.stats["poll_failures"] == failures + 1  # type: ignore[attr-defined]  # counted, once
    assert published_states(harness, await kafka.events()) == truth
    assert await kafka.size("dead_letter") == 0


# -- secrets -----------------------------------------------------------------------------------------


async def test_no_secret_appears_in_any_log_line_at_debug(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials, wrong credentials, signatures and tickets: not even 10 characters in a row of
    any of them in a log record as the JSON formatter would write it before redaction."""
    caplog.set_level(logging.DEBUG)
    caplog.handler.setFormatter(JsonFormatter())  # each record as the service writes it, before redaction
    async with bridge(harness.wrong_secret_section(**stream_settings(harness, config_error_retry=0.1, backfill_enabled=False))) as service:
        if "config_error_pacing" in harness.capabilities:
            await eventually(lambda: len(harness.attempts()) >= 2, what="the wrong secret refused twice")
        if "webhook_auth" in harness.capabilities:
            await harness.ready(service.app)
            assert await harness.post_state(harness.create(1)[0]) == 401
        reprs = [repr(source) for source in service.app.sources]
    async with bridge(harness.section(**stream_settings(harness, backfill_interval=0.5))) as service:
        await harness.ready(service.app)
        await harness.send_not_json()
        await harness.run_lifecycles(harness.create(3), faults=True)
        await kafka.wait_for(events=state_count(harness.truth()), dead_letters=1)
        reprs += [repr(source) for source in service.app.sources]
        assert await service.stop() == ExitCode.OK
    assert len(caplog.records) > 20 and len(harness.secrets()) > 4
    assert leaked(harness.secrets(), caplog.text + "\n".join(reprs)) == set()


# -- shutdown ----------------------------------------------------------------------------------------


async def test_after_a_stop_request_run_returns_0_and_everything_acknowledged_is_in_kafka(
    harness: ProviderHarness, bridge: Bridge, kafka: Topics
) -> None:
    before = PipelineCounts.now(harness.name)
    async with bridge(harness.section(), linger_ms=200) as service:  # slow acks: the stop lands mid-flight
        await harness.ready(service.app)
        driving = asyncio.create_task(harness.run_lifecycles(harness.create(6)))
        await eventually(lambda: (PipelineCounts.now(harness.name) - before).received >= 3, what="events in the pipeline")
        in_flight = service.app.pipeline.in_flight if service.app.pipeline else 0
        code = await service.stop()
        driving.cancel()
        await asyncio.gather(driving, return_exceptions=True)
    assert code == ExitCode.OK
    assert in_flight > 0, "nothing was in flight when the stop came"
    counts = PipelineCounts.now(harness.name) - before
    assert counts.received == counts.published + counts.deduplicated  # every accepted event was decided
    records = await kafka.events()
    assert len(records) == counts.published > 0
    published = published_states(harness, records)
    for key, states in harness.acknowledged().items():  # the provider was told these are stored
        assert set(states) <= set(published.get(key, [])), key
