"""One process, isolated sources: a source that crashes, hangs or is misconfigured is restarted with
backoff and never stops the others, the webhook server or the pipeline."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.contract.events import Provider
from bridge.delivery.settings import TopicSettings
from bridge.ingest.source import ConfigurationError, SourceBase
from bridge.kafka.settings import KafkaSettings
from bridge.observability import metrics
from bridge.service.app import ExitCode
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import compare
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator
from tests.service.support import eventually, running, service_settings

pytestmark = pytest.mark.kafka

WEBHOOK_SECRET = "whsec_isolation_5a1f0e"


class CrashingSource(SourceBase):
    """Raises soon after every start, like a source with a bug."""

    provider = Provider.RIPIO

    def __init__(self, name: str = "crasher", error: type[Exception] = RuntimeError) -> None:
        super().__init__(name)
        self.starts: list[float] = []
        self.error = error

    async def run(self) -> None:
        self.starts.append(time.monotonic())
        await asyncio.sleep(0.01)
        raise self.error(f"{self.name} failed on start {len(self.starts)}")


class HangingSource(SourceBase):
    """Never connects and never returns; with ``ignore_cancels`` it even swallows cancellations."""

    provider = Provider.RIPIO

    def __init__(self, name: str = "hanger", ignore_cancels: int = 0) -> None:
        super().__init__(name)
        self.starts = 0
        self.cancels_ignored = 0
        self._ignore = ignore_cancels

    async def run(self) -> None:
        self.starts += 1
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.cancels_ignored >= self._ignore:
                    raise
                self.cancels_ignored += 1


def restarts(source: str, reason: str) -> float:
    return metrics.SOURCE_RESTARTS.labels(source, reason)._value.get()


@pytest.fixture
async def okx() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(idle_timeout=10.0) as simulator:
        yield simulator


def okx_section(sim: OkxSimulator) -> dict:
    account = sim.accounts["main"]
    return {
        "enabled": True,
        "ws_url": sim.ws_url,
        "rest_url": sim.rest_url,
        "accounts": [{"name": "main", "api_key": account.api_key, "secret_key": account.secret_key, "passphrase": account.passphrase}],
        "reconnect_initial": 0.05,
        "reconnect_max": 0.5,
        "backfill_enabled": False,
    }


async def test_a_source_crashing_repeatedly_is_restarted_while_okx_and_the_webhook_keep_publishing(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, kafka_bootstrap: str, okx: OkxSimulator
) -> None:
    settings = service_settings(
        tmp_path, kafka_settings, topics, okx=okx_section(okx), openxswitch={"enabled": True, "secrets": [WEBHOOK_SECRET]}
    )
    crasher = CrashingSource("crasher-a")
    async with running(settings, lambda pipeline: [crasher]) as bridge:
        await okx.wait_subscribed("main")
        transfers = [okx.create("withdrawal", "main"), okx.create("deposit", "main")]
        await okx.run_lifecycles(transfers, min_step_interval=0.1, timeout=20)
        webhook = OpenXSwitchSimulator(bridge.url("webhooks", "/webhooks/openxswitch"), WEBHOOK_SECRET)
        withdrawal = webhook.withdrawal()
        async with aiohttp.ClientSession() as session:
            statuses = [await webhook.post(session, webhook.delivery(withdrawal, i)) for i in range(len(withdrawal.states))]
        await eventually(lambda: len(crasher.starts) >= 4, what="crasher restarted 3 times")
        status, ready = await bridge.get_json("/readyz")
        kept = bridge.app.supervisor.kept  # type: ignore[union-attr]
        assert kept["okx:main"].restarts == 0 and kept["openxswitch:webhook"].restarts == 0
    assert await bridge.task == ExitCode.OK
    assert statuses == [200] * len(withdrawal.states)
    assert status == 503  # the crashing source is past its (zero) grace: not ready, and says why
    assert ready["kafka"]["ready"] is True
    assert ready["sources"]["okx:main"]["connected"] is True
    assert ready["sources"]["crasher-a"]["ready"] is False
    assert ready["sources"]["crasher-a"]["last_error"].startswith("RuntimeError: crasher-a failed on start")
    assert ready["sources"]["crasher-a"]["supervisor"]["last_exit"] == "crashed"
    assert restarts("crasher-a", "crashed") >= 3
    gaps = [b - a for a, b in itertools.pairwise(crasher.starts)]
    assert all(gap >= 0.025 for gap in gaps)  # backoff between restarts (jitter: at least half the first delay)
    truth = okx.truth()
    okx_records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=len(truth[transfers[0].key]) + len(withdrawal.states), timeout=15)
    okx_records += await read_topic(kafka_bootstrap, topics.deposit, expect=len(truth[transfers[1].key]), timeout=15)
    assert compare(truth, [r for r in okx_records if json.loads(r.value)["provider"] == "okx"]) == {"lost": 0, "out_of_order": 0, "duplicated": 0}
    published = {json.loads(r.value)["event_id"] for r in okx_records}
    assert {state.event.event_id for state in withdrawal.states} <= published


async def test_a_source_that_hangs_disconnected_is_restarted_as_stalled(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = service_settings(tmp_path, kafka_settings, topics, supervisor={"stall_restart_seconds": 0.3})
    hanger = HangingSource("hanger-a")
    async with running(settings, lambda pipeline: [hanger]) as bridge:
        await eventually(lambda: hanger.starts >= 3, what="hanging source restarted twice")
        status, ready = await bridge.get_json("/readyz")
    assert status == 503
    assert ready["sources"]["hanger-a"]["last_error"] == "not connected for 0.3s; restarted"
    assert restarts("hanger-a", "stalled") >= 2


async def test_a_source_ignoring_cancellation_is_cancelled_again_and_restarted(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = service_settings(
        tmp_path, kafka_settings, topics, supervisor={"stall_restart_seconds": 0.2, "cancel_timeout_seconds": 0.2}
    )
    stubborn = HangingSource("stubborn-a", ignore_cancels=2)
    async with running(settings, lambda pipeline: [stubborn]):
        await eventually(lambda: stubborn.starts >= 2, what="stubborn source restarted")
    assert stubborn.cancels_ignored == 2


async def test_a_misconfigured_source_is_retried_at_the_slower_configuration_pace(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = service_settings(tmp_path, kafka_settings, topics, supervisor={"config_error_retry_seconds": 0.4})
    refused = CrashingSource("refused-a", error=ConfigurationError)
    crashed = CrashingSource("crashed-a")
    async with running(settings, lambda pipeline: [refused, crashed]) as bridge:
        await eventually(lambda: len(refused.starts) >= 3, what="misconfigured source retried twice")
        status, ready = await bridge.get_json("/readyz")
    gaps = [b - a for a, b in itertools.pairwise(refused.starts)]
    assert min(gaps) >= 0.4
    assert len(crashed.starts) > len(refused.starts)  # a crash is retried faster
    assert ready["sources"]["refused-a"]["config_error"] is True
    assert ready["sources"]["refused-a"]["supervisor"]["last_exit"] == "config_error"


async def test_readiness_ignores_sources_when_they_do_not_gate_it(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = service_settings(tmp_path, kafka_settings, topics, supervisor={"sources_gate_readiness": False})
    async with running(settings, lambda pipeline: [CrashingSource("crasher-b")]) as bridge:
        status, ready = await bridge.get_json("/readyz")
    assert status == 200 and ready["sources"]["crasher-b"]["ready"] is False


async def test_metrics_endpoint_serves_supervision_and_pipeline_metrics(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = service_settings(tmp_path, kafka_settings, topics)
    async with running(settings, lambda pipeline: [CrashingSource("crasher-c")]) as bridge:
        await eventually(lambda: restarts("crasher-c", "crashed") >= 1, what="one restart")
        async with aiohttp.ClientSession() as session, session.get(bridge.url("admin", "/metrics")) as response:
            text = await response.text()
            content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=0.0.4")
    for sample in ('bridge_source_restarts_total{reason="crashed",source="crasher-c"}', 'bridge_source_ready{source="crasher-c"} 0.0', "bridge_kafka_reachable 1.0", "bridge_in_flight ", "bridge_queued 0.0", "bridge_dedup_store_bytes "):
        assert sample in text, sample


async def test_health_answers_while_kafka_is_unreachable_and_start_gives_up_with_exit_3(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket is closed
    settings = service_settings(tmp_path, KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), startup={"kafka_timeout_seconds": 1.5})
    from bridge.service.app import BridgeApp

    app = BridgeApp(settings, install_signal_handlers=False)
    task = asyncio.create_task(app.run())
    await eventually(lambda: "admin" in app.http.addresses, what="admin listener")
    host, admin = app.http.addresses["admin"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{admin}/healthz") as health:
            assert health.status == 200
        async with session.get(f"http://{host}:{admin}/readyz") as readiness:
            assert readiness.status == 503
            assert (await readiness.json())["kafka"]["state"] == "starting"
    assert await asyncio.wait_for(task, 20) == ExitCode.KAFKA_UNREACHABLE


async def test_a_port_already_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    from bridge.service.app import BridgeApp

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = service_settings(tmp_path, server={"admin_port": taken.getsockname()[1]})
        code = await BridgeApp(settings, install_signal_handlers=False).run()
    assert code == ExitCode.CONFIG
