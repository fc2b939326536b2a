"""Live reload: accounts added and removed while the others keep streaming, secrets rotated, bad
configurations refused, fixed sections refused, the generation on /readyz and /metrics; accounts
added by a reload share the running provider-level objects (Binance's IP budget, OKX's backfill
coordinator) until the provider's shared settings change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.observability import metrics
from bridge.service.app import BridgeApp, ServiceSettings
from bridge.service.settings import load_settings
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.binance.support import fast_simulator
from bridge_testkit.binance.support import section as binance_section
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import compare
from bridge_testkit.okx.simulator import OkxSimulator, SimAccount
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator
from tests.service.support import Running, eventually, service_document, write_yaml

pytestmark = pytest.mark.kafka

OLD_SECRET = "whsec_before_rotation_71c2"
NEW_SECRET = "whsec_after_rotation_9e04"


def _accounts() -> list[SimAccount]:
    """Three independent keys (no master/sub-account relation)."""
    return [
        SimAccount(name, f"4471130000000{n}", f"key-{name}-{n}", f"SECRET{n}{name.upper()}" * 4, f"Pass-{name}-{n}!")
        for n, name in enumerate(("alpha", "beta", "gamma"), start=1)
    ]


def _okx(sim: OkxSimulator, *names: str) -> dict[str, Any]:
    accounts = [
        {"name": name, "api_key": sim.accounts[name].api_key, "secret_key": sim.accounts[name].secret_key,
         "passphrase": sim.accounts[name].passphrase}
        for name in names
    ]
    return {"enabled": True, "ws_url": sim.ws_url, "rest_url": sim.rest_url, "accounts": accounts,
            "reconnect_initial": 0.05, "reconnect_max": 0.5, "backfill_enabled": False}


def _logins(sim: OkxSimulator, account: str) -> int:
    return sum(1 for _, name, code in sim.login_attempts if name == account and code == "0")


@contextlib.asynccontextmanager
async def _running(config: Path, *, signals: bool = False) -> AsyncIterator[Running]:
    settings = load_settings(ServiceSettings, config_file=config, environ={})
    app = BridgeApp(
        settings,
        install_signal_handlers=signals,
        reload_settings=lambda: load_settings(ServiceSettings, config_file=config, environ={}),
        watch_paths=[config],
    )
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.started.wait(), 60)
    run = Running(app, task)
    try:
        yield run
    finally:
        if not task.done():
            await run.stop()


@pytest.fixture
async def okx() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(_accounts(), idle_timeout=10.0) as simulator:
        yield simulator


async def test_sighup_adds_and_removes_accounts_while_the_untouched_one_keeps_its_connection_and_loses_nothing(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, kafka_bootstrap: str, okx: OkxSimulator
) -> None:
    only_sighup = {"watch_seconds": 0}  # no file watching: the signal alone must do it
    config = write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path, kafka_settings, topics, okx=_okx(okx, "alpha", "beta"),
                                                                   reload=only_sighup))
    async with _running(config, signals=True) as bridge:
        await okx.wait_subscribed("alpha", "beta")
        streaming = [okx.create("withdrawal", "alpha"), okx.create("deposit", "alpha"), okx.create("deposit", "alpha")]
        flowing = asyncio.create_task(okx.run_lifecycles(streaming, min_step_interval=0.15, timeout=30))
        await asyncio.sleep(0.3)  # alpha's transfers are mid-lifecycle when the configuration changes
        write_yaml(config, service_document(tmp_path, kafka_settings, topics, okx=_okx(okx, "alpha", "gamma"),
                                            reload=only_sighup))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: bridge.app.reloader.generation == 2, what="generation 2")  # type: ignore[union-attr]
        await okx.wait_subscribed("gamma")
        added = [okx.create("withdrawal", "gamma")]
        await okx.run_lifecycles(added, min_step_interval=0.05, timeout=20)
        await flowing
        await eventually(lambda: not okx.subscribed("beta"), what="beta's connection closed")
        status, ready = await bridge.get_json("/readyz")
        kept = set(bridge.app.supervisor.kept)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as session, session.get(bridge.url("admin", "/metrics")) as response:
            scraped = await response.text()
    assert status == 200 and ready["config"]["generation"] == 2
    assert ready["config"]["last_reload"]["added"] == ["okx:gamma"]
    assert ready["config"]["last_reload"]["removed"] == ["okx:beta"]
    assert kept == {"okx:alpha", "okx:gamma"}
    assert _logins(okx, "alpha") == 1  # untouched: the same connection throughout
    assert _logins(okx, "beta") == 1 and _logins(okx, "gamma") == 1
    assert okx.stats["connections"] == 3  # one each: alpha's was never reopened
    assert 'bridge_source_ready{source="okx:alpha"} 1.0' in scraped
    assert 'bridge_source_ready{source="okx:beta"}' not in scraped  # the removed source's gauge is gone
    assert "bridge_config_generation 2.0" in scraped
    truth = okx.truth()
    expected = sum(len(states) for states in truth.values())
    records = await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.0)
    records += await read_topic(kafka_bootstrap, topics.deposit, expect=expected - len(records), timeout=15)
    assert compare(truth, records) == {"lost": 0, "out_of_order": 0, "duplicated": 0}


async def test_an_invalid_or_fixed_section_reload_is_refused_and_the_running_configuration_stays(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, okx: OkxSimulator
) -> None:
    document = service_document(tmp_path, kafka_settings, topics, okx=_okx(okx, "alpha"), reload={"watch_seconds": 0})
    config = write_yaml(tmp_path / "bridge.yaml", document)
    async with _running(config) as bridge:
        reloader = bridge.app.reloader
        assert reloader is not None
        await okx.wait_subscribed("alpha")
        refused_before = metrics.CONFIG_RELOADS.labels("refused")._value.get()
        write_yaml(config, {**document, "okx": {**_okx(okx, "alpha", "beta"), "reconect_max": 1}})  # a typo
        assert await reloader.reload("test") == "refused"
        _, invalid = await bridge.get_json("/readyz")
        changed_kafka = {**document, "kafka": {**document["kafka"], "linger_ms": 50}, "okx": _okx(okx, "alpha", "beta")}
        write_yaml(config, changed_kafka)
        assert await reloader.reload("test") == "refused"
        _, fixed = await bridge.get_json("/readyz")
        write_yaml(config, document)
        assert await reloader.reload("test") == "unchanged"
        kept = set(bridge.app.supervisor.kept)  # type: ignore[union-attr]
    assert invalid["config"]["generation"] == 1 and invalid["config"]["last_reload"]["result"] == "refused"
    assert "okx.reconect_max: unknown setting" in invalid["config"]["last_reload"]["error"]
    assert fixed["config"]["last_reload"]["error"].startswith("kafka cannot change while running")
    assert kept == {"okx:alpha"} and not okx.subscribed("beta")  # nothing of the refused reloads applied
    assert _logins(okx, "alpha") == 1
    assert metrics.CONFIG_RELOADS.labels("refused")._value.get() == refused_before + 2


async def test_a_rotated_webhook_secret_applies_when_the_file_changes_without_a_gap_and_the_old_one_is_refused(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, okx: OkxSimulator, kafka_bootstrap: str
) -> None:
    def document(*secrets: str) -> dict[str, Any]:
        return service_document(tmp_path, kafka_settings, topics, okx=_okx(okx, "alpha"), reload={"watch_seconds": 0.1},
                                openxswitch={"enabled": True, "secrets": list(secrets)})

    config = write_yaml(tmp_path / "bridge.yaml", document(OLD_SECRET))
    async with _running(config) as bridge, aiohttp.ClientSession() as session:
        await okx.wait_subscribed("alpha")
        url = bridge.url("webhooks", "/webhooks/openxswitch")
        old, new = OpenXSwitchSimulator(url, OLD_SECRET), OpenXSwitchSimulator(url, NEW_SECRET)
        first, second = old.withdrawal(), new.withdrawal()
        before = [await old.post(session, old.delivery(first, 0)), await new.post(session, new.delivery(second, 0))]
        write_yaml(config, document(OLD_SECRET, NEW_SECRET))  # rotation: both valid for a while
        await eventually(lambda: bridge.app.reloader.generation == 2, what="generation 2")  # type: ignore[union-attr]
        during = [await old.post(session, old.delivery(first, 1)), await new.post(session, new.delivery(second, 0))]
        write_yaml(config, document(NEW_SECRET))
        await eventually(lambda: bridge.app.reloader.generation == 3, what="generation 3")  # type: ignore[union-attr]
        after = [await old.post(session, old.delivery(first, 1)), await new.post(session, new.delivery(second, 1))]
        _, ready = await bridge.get_json("/readyz")
    assert before == [200, 401] and during == [200, 200] and after == [401, 200]
    assert ready["config"]["last_reload"]["restarted"] == ["openxswitch:webhook"]
    assert _logins(okx, "alpha") == 1  # the OKX source was not touched by the webhook's reloads
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=4, timeout=15)
    ids = {json.loads(r.value)["event_id"] for r in records}
    assert ids == {s.event.event_id for s in first.states} | {s.event.event_id for s in second.states}


def _settings(tmp_path: Path, **sections: Any) -> ServiceSettings:
    document = service_document(tmp_path, **sections)
    return load_settings(ServiceSettings, config_file=write_yaml(tmp_path / "plan.yaml", document), environ={})


def _okx_static(*accounts: tuple[str, str], **shared: Any) -> dict[str, Any]:
    return {"enabled": True, "ws_url": "wss://okx.invalid/ws", "rest_url": "https://okx.invalid", **shared,
            "accounts": [{"name": n, "api_key": f"k-{n}", "secret_key": s, "passphrase": "p"} for n, s in accounts]}


def test_a_reload_plan_restarts_only_the_changed_account_and_all_of_a_provider_whose_shared_settings_changed(tmp_path: Path) -> None:
    from bridge.service.reload import fingerprint, plan_reload

    running = ["okx:a", "okx:b", "okx:c"]
    old = _settings(tmp_path, okx=_okx_static(("a", "s1"), ("b", "s2"), ("c", "s3")))
    rotated = plan_reload(old, _settings(tmp_path, okx=_okx_static(("a", "s1"), ("b", "s2-new"), ("c", "s3"))), running)
    assert rotated.stop == ["okx:b"] and [[a.name for a in s.accounts] for _, s in rotated.build] == [["b"]]  # type: ignore[attr-defined]
    shared = plan_reload(old, _settings(tmp_path, okx=_okx_static(("a", "s1"), ("b", "s2"), ("c", "s3"), reconnect_max=5)), running)
    assert shared.stop == running and [len(s.accounts) for _, s in shared.build] == [3]  # type: ignore[attr-defined]
    off = plan_reload(old, _settings(tmp_path, okx={**_okx_static(("a", "s1")), "enabled": False}), running)
    assert off.stop == running and off.build == []
    same = plan_reload(old, _settings(tmp_path, okx=_okx_static(("a", "s1"), ("b", "s2"), ("c", "s3")), stuck={"deposit_hours": 1}), running)
    assert same.stop == [] and same.build == [] and same.live == ["stuck"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "openxswitch__secrets").write_text("one")
    before = fingerprint([secrets])
    (secrets / "openxswitch__secrets").write_text("two")
    assert fingerprint([secrets]) != before  # a rotated secret file is noticed by the watcher


def _binance(sim: BinanceSimulator, tmp_path: Path, *names: str, **shared: Any) -> dict[str, Any]:
    return binance_section(sim, [sim.accounts[name].entry(lookup_uid=False) for name in names], cursor_dir=str(tmp_path / "cursors"), **shared)


def _source(bridge: Running, name: str) -> Any:
    return next(source for source in bridge.app.sources if source.name == name)


async def test_accounts_added_by_a_reload_share_the_running_binance_ip_budget_and_okx_coordinator_until_shared_settings_change(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, okx: OkxSimulator
) -> None:
    def document(sim: BinanceSimulator, okx_accounts: tuple[str, ...], binance_accounts: tuple[str, ...], **binance: Any) -> dict[str, Any]:
        return service_document(tmp_path, kafka_settings, topics, reload={"watch_seconds": 0}, okx=_okx(okx, *okx_accounts),
                                binance=_binance(sim, tmp_path, *binance_accounts, **binance))

    async with fast_simulator() as sim:
        config = write_yaml(tmp_path / "bridge.yaml", document(sim, ("alpha",), ("main",)))
        async with _running(config) as bridge:
            reloader = bridge.app.reloader
            assert reloader is not None
            await okx.wait_subscribed("alpha")
            main = _source(bridge, "binance:main")
            await eventually(lambda: main.stats["polls"] >= 1, what="main's first poll")
            sim.fail("418", account="main", retry_after=3)  # the IP is banned for 3 s ...
            await eventually(lambda: main.limits.banned_until_ms > 0, what="the ban learned")
            banned_at = next(at for at, _, _, status in sim.requests if status == 418)
            write_yaml(config, document(sim, ("alpha", "gamma"), ("main", "other")))
            reloaded_at = time.monotonic()
            assert await reloader.reload("test") == "applied"  # ... when a key is added: it must wait too
            other, alpha, gamma = _source(bridge, "binance:other"), _source(bridge, "okx:alpha"), _source(bridge, "okx:gamma")
            await asyncio.sleep(banned_at + 3.0 - time.monotonic())
            assert [(who, path) for at, who, path, _ in sim.requests if reloaded_at <= at < banned_at + 3.0] == []  # none while banned
            await eventually(lambda: other.stats["polls"] >= 1, timeout=20, what="other's first poll after the ban")
            write_yaml(config, document(sim, ("alpha", "gamma"), ("main", "other"), ip_weight_limit=6_000))
            assert await reloader.reload("test") == "applied"  # a shared setting: Binance restarts, OKX does not
            renewed = [_source(bridge, "binance:main"), _source(bridge, "binance:other")]
            kept = [_source(bridge, "okx:alpha"), _source(bridge, "okx:gamma")]
    assert other.limits is main.limits  # one IP, one budget
    assert gamma._coordinator is alpha._coordinator
    assert sim.stats["requests_while_banned"] == 0 and sim.stats["bans_earned"] == 0
    assert renewed[0].limits is renewed[1].limits and renewed[0].limits is not main.limits
    assert renewed[0].limits.limits["ip"] == 6_000
    assert kept == [alpha, gamma] and alpha._coordinator is gamma._coordinator


def test_a_provider_context_is_kept_while_its_shared_settings_stay_and_forgotten_when_they_change_or_it_is_disabled() -> None:
    from bridge.ingest.plugins import plugin_for
    from bridge.ingest.shared import ProviderContexts

    section = plugin_for("okx").config
    one = section(**_okx_static(("a", "s1")))
    more = section(**_okx_static(("a", "s1-rotated"), ("b", "s2")))
    faster = section(**_okx_static(("a", "s1"), reconnect_max=5))
    contexts = ProviderContexts()
    running = contexts.context("okx", one)
    assert contexts.context("okx", more) is running  # accounts added or changed: the same objects
    changed = contexts.context("okx", faster)
    assert changed is not running
    contexts.retain({"okx": faster})
    assert contexts.context("okx", faster) is changed and contexts.context("okx", one) is not running
    contexts.retain({"okx": faster.model_copy(update={"enabled": False})})
    assert contexts.context("okx", faster) is not changed
