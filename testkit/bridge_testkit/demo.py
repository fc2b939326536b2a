"""The README's main job: real broker, the real service, provider traffic in, what a consumer reads out.

Starts a local Kafka broker unless ``KAFKA_BOOTSTRAP_SERVERS`` points at one, and the service shell
(``BridgeApp``: the start-up, supervision, webhook route and shutdown of ``transfer-bridge run``) on
127.0.0.1 with the providers pointed at their simulators. First the example payloads of the
provider documents (each twice, to show deduplication) and one malformed payload go through
parse → dedup → publish. Then the simulators drive the real adapters live, at the same time:

* OKX and Ripio over loopback WebSocket + REST: login / ticket, keepalive, dropped connections,
  identical repeats, a lost Ripio message id, states only the REST history shows (backfill);
* OpenXSwitch: signed webhooks posted to the real receiver, each answered 2xx only after Kafka
  acknowledged; re-deliveries under new requestIds (some at once), states out of order, and one
  answer lost on the way back, so the sender retries as the provider does after any non-2xx;
* Binance, which has no push: signed polls (HMAC and Ed25519 keys) of the deposit and withdrawal
  history, rows changing in place between polls, a travel-rule hold, and one 429 obeyed;
* Fireblocks: v1 (RSA-SHA512) and v2 (JWS, keys from the simulator's JWKS) signed transaction
  webhooks, a re-delivery, a state after its successor (acknowledged, not published), an answer
  lost and retried, and a final state never delivered that the JWT-signed REST backfill brings.

It prints per-provider figures, stops the service cleanly, and reads the topics back as a
downstream consumer would: one line per record.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult
from bridge.contract.timeutil import format_utc_ms
from bridge.delivery.pipeline import Outcome
from bridge.delivery.settings import TopicSettings
from bridge.observability.logs import configure_logging
from bridge.service.app import BridgeApp, ExitCode, ServiceSettings
from bridge.service.cli import ExtraCommand
from bridge.service.settings import load_settings
from bridge.sources.binance.service import BinanceAccountSource
from bridge.sources.fireblocks.webhook import FireblocksWebhook
from bridge.sources.okx.parse import parse_push
from bridge.sources.okx.service import OkxAccountSource
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from bridge.sources.ripio.parse import parse_message
from bridge.sources.ripio.service import RipioAccountSource
from bridge_testkit.binance import demo as binance_demo
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.binance.support import fast_simulator
from bridge_testkit.fireblocks import demo as fireblocks_demo
from bridge_testkit.fireblocks.simulator import FireblocksSimulator
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.scenario import settle as settle_okx
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, Plan, SimDelivery
from bridge_testkit.ripio.scenario import settle as settle_ripio
from bridge_testkit.ripio.simulator import RipioSimulator

__all__ = ["main", "run_demo", "example_items"]

EXAMPLES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"

OKX_SCRIPTS = ("deposit", "deposit-travel-rule", "withdrawal-hot-wallet")
"""Live OKX transfers: a deposit with a repeated push, and two lifecycles with a state only the
REST history shows, so the backfill has something to find."""
RIPIO_SCRIPTS = ("deposit-crypto-repeats", "deposit-fiat", "withdrawal-crypto", "withdrawal-failed")
"""Live Ripio transfers: repeats built into the script, a fiat deposit, a success and a failure."""
PROVIDERS = ("okx", "ripio", "openxswitch", "binance", "fireblocks")
_WEBHOOK_RESULTS = {
    "published": Outcome.PUBLISHED,
    "duplicate": Outcome.DUPLICATE,
    "stale": Outcome.STALE,
    "dead_lettered": Outcome.DEAD_LETTERED,
}
"""The webhook receiver's answer results (its ``stats`` keys) that are pipeline outcomes."""


def _now() -> str:
    from datetime import datetime

    return format_utc_ms(datetime.now(UTC))


def example_items() -> list[ParseResult]:
    """Every example payload of the provider documents, normalized (or dead-lettered)."""
    items: list[ParseResult] = []
    for name in ("okx/deposit-info.push.json", "okx/withdrawal-info.push.json"):
        items += parse_push(orjson.loads((EXAMPLES / name).read_bytes()), received_at=_now())
    for name in ("ripio/deposit.crypto.json", "ripio/deposit.fiat.json"):
        items += parse_message(loads_exact((EXAMPLES / name).read_bytes()), received_at=_now())
    for name in ("openxswitch/withdraw.unconfirmed.json", "openxswitch/withdraw.confirmed.json"):
        items += parse_delivery(loads_exact((EXAMPLES / name).read_bytes()), received_at=_now())
    return items


class _TailReader:
    """Assigned to the topics' ends *before* publishing, so it shows exactly this run's records."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
        )
        self._topics = topics
        self._stopped = False

    async def start(self) -> None:
        await self._consumer.start()
        # aiokafka has no public "load metadata for these topics" call for manual assignment.
        await self._consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(t, p) for t in self._topics for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)  # pin the end now, not at first fetch

    async def read(self, expect: int, timeout: float = 15.0) -> list[Any]:
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while len(records) < expect and asyncio.get_running_loop().time() < deadline:
                for batch in (await self._consumer.getmany(timeout_ms=300)).values():
                    records.extend(batch)
        finally:
            await self.stop()
        return records

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            await self._consumer.stop()


class _LossySender(OpenXSwitchSimulator):
    """The OpenXSwitch sender, except that the first answer to chosen deliveries is lost on the way
    back (a timeout at the provider). The bridge already has the state; the provider cannot know
    and retries after its interval, as after any non-2xx — the retry must be answered as a repeat."""

    def __init__(self, url: str, secret: str, **options: Any):
        super().__init__(url, secret, **options)
        self.lose_first_answer: set[str] = set()
        self.answers_lost = 0

    async def post(self, session: aiohttp.ClientSession, delivery: SimDelivery, latencies: list[float] | None = None) -> int:
        status = await super().post(session, delivery, latencies)
        if 200 <= status < 300 and len(delivery.attempts) == 1 and delivery.request_id in self.lose_first_answer:
            delivery.attempts[-1], delivery.acked_at = 0, None
            self.answers_lost += 1
            return 0
        return status


@dataclass
class _Figures:
    """One provider's live run: what the simulator sent, and what the bridge made of it."""

    provider: str
    transfers: int
    states: int
    traffic: str
    outcomes: Counter[str]
    relisted: int = 0
    """Of the duplicates: states the REST backfill listed again after the stream had them."""

    @property
    def written(self) -> int:
        """Records this provider put on the topics (events and dead letters)."""
        return self.outcomes[Outcome.PUBLISHED.value] + self.outcomes[Outcome.DEAD_LETTERED.value]

    def line(self) -> str:
        dropped = self.outcomes[Outcome.DUPLICATE.value]
        stale = self.outcomes[Outcome.STALE.value]
        result = f"published {self.outcomes[Outcome.PUBLISHED.value]}, duplicates dropped {dropped}"
        if self.relisted:
            result += f" ({self.relisted} from backfill)"
        if stale:
            result += f", stale after final {stale}"
        if self.outcomes[Outcome.DEAD_LETTERED.value]:
            result += f", dead-lettered {self.outcomes[Outcome.DEAD_LETTERED.value]}"
        return f"{self.provider:<12} {self.transfers} transfers {self.states:>2} states | {self.traffic} | {result}"


def _reveal(value: Any) -> Any:
    """The simulators' throwaway credentials in clear, for the private config file of the run."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value


def _service_settings(
    bootstrap: str,
    state_dir: Path,
    okx: OkxSimulator,
    ripio: RipioSimulator,
    webhook_secret: str,
    topics: TopicSettings | None,
    binance: BinanceSimulator,
    fireblocks: FireblocksSimulator,
) -> ServiceSettings:
    """A configuration file like an operator's, pointed at the simulators, loaded the way
    ``transfer-bridge run`` loads it — without ``BRIDGE_…`` variables, so a developer's own
    environment cannot redirect the demo."""
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": 2},
        "topics": topics.model_dump(mode="json") if topics else {"partitions": 3},
        "dedup": {"store": "sqlite", "path": str(state_dir / "dedup.sqlite3")},
        "server": {"host": "127.0.0.1", "port": 0, "admin_port": None},
        "okx": _reveal(scenario_config(okx).model_dump()),
        "ripio": _reveal(ripio.config().model_dump()),
        "openxswitch": {"enabled": True, "secrets": [webhook_secret], "ack_timeout_seconds": 5.0},
        "binance": binance_demo.section(binance, state_dir),
        "fireblocks": fireblocks_demo.section(fireblocks, state_dir),
    }
    path = state_dir / "bridge.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, default=str))
    return load_settings(ServiceSettings, config_file=path, environ={})


def _source_outcomes(sources: Iterable[OkxAccountSource | RipioAccountSource]) -> tuple[Counter[str], int, int, int]:
    """Pipeline outcomes of WebSocket sources (push and backfill), states first found by the
    backfill, states it listed again (dropped as duplicates), and reconnects."""
    outcomes: Counter[str] = Counter()
    backfilled = relisted = reconnects = 0
    for source in sources:
        for name, count in source.stats.items():
            via, _, result = name.partition(".")
            if via in ("push", "backfill") and result in {o.value for o in Outcome}:
                outcomes[result] += count
                backfilled += count if via == "backfill" and result == Outcome.PUBLISHED.value else 0
                relisted += count if via == "backfill" and result == Outcome.DUPLICATE.value else 0
            elif via == "reconnect":
                reconnects += count
    return outcomes, backfilled, relisted, reconnects


def _late_deliveries(plan: Plan) -> int:
    """Deliveries posted after a later state of the same transfer had been posted (out of order)."""
    late = 0
    for transfer_steps in plan.steps:
        highest = -1
        for step in transfer_steps:
            for delivery in step:
                if delivery.transfer is None or delivery.state is None:
                    continue
                index = delivery.transfer.states.index(delivery.state)
                late += index < highest
                highest = max(highest, index)
    return late


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


async def _run_live(
    app: BridgeApp, okx: OkxSimulator, ripio: RipioSimulator, webhook_secret: str, binance: BinanceSimulator, fireblocks: FireblocksSimulator
) -> list[_Figures]:
    """All the simulators at once against the running service; returns per-provider figures
    once every source settled and Kafka acknowledged everything."""
    assert app.pipeline is not None
    host, port = app.http.addresses["webhooks"]
    url = f"http://{host}:{port}{app.settings.openxswitch.path}"
    sender = _LossySender(url, webhook_secret, retry_interval=0.3, retry_window=30.0, request_timeout=10.0, seed=1)
    sender.withdrawal()
    sender.withdrawal()
    sender.deposit(confirmations=2)
    sender.deposit(internal=True)
    plan = sender.plan(redeliver=0.3, concurrent=0.3, out_of_order=0.25)  # seed 1: one transfer's final first
    final = next(d for d in plan.deliveries if d.state is not None and d.state.is_final)
    sender.lose_first_answer.add(final.request_id)

    await asyncio.gather(okx.wait_subscribed(), ripio.wait_subscribed())
    okx_transfers = [okx.create(script, name) for script, name in zip(OKX_SCRIPTS, itertools.cycle(okx.accounts))]
    ripio_transfers = [ripio.create(script, name) for script, name in zip(RIPIO_SCRIPTS, itertools.cycle(ripio.accounts))]
    binance_sources = [s for s in app.sources if isinstance(s, BinanceAccountSource)]
    fireblocks_webhook = next(s for s in app.sources if isinstance(s, FireblocksWebhook))
    fireblocks_url = f"http://{host}:{port}{fireblocks_webhook.config.path}"
    _, _, _, polled, pushed = await asyncio.gather(
        okx.run_lifecycles(okx_transfers, repeat_every=4, drop_every=6, timeout=30),
        ripio.run_lifecycles(ripio_transfers, repeat_every=3, skip_every=4, drop_every=5, timeout=30),
        sender.send(plan),
        binance_demo.run_live(binance, binance_sources),
        fireblocks_demo.run_live(fireblocks, fireblocks_webhook, fireblocks_url),
    )
    okx_sources = [s for s in app.sources if isinstance(s, OkxAccountSource)]
    ripio_sources = [s for s in app.sources if isinstance(s, RipioAccountSource)]
    webhook = next(s for s in app.sources if isinstance(s, OpenXSwitchWebhook))
    await settle_okx(okx_sources, app.pipeline, timeout=30)
    await settle_ripio(ripio_sources, app.pipeline, timeout=30)

    figures: list[_Figures] = []
    outcomes, backfilled, relisted, reconnects = _source_outcomes(okx_sources)
    traffic = (
        f"{okx.stats['pushes']} pushes, {_plural(okx.stats['drops'], 'drop')}, {_plural(reconnects, 'reconnect')}, {backfilled} via backfill"
    )
    figures.append(_Figures("okx", len(okx_transfers), okx.stats["states"], traffic, outcomes, relisted))
    outcomes, backfilled, relisted, reconnects = _source_outcomes(ripio_sources)
    traffic = (
        f"{ripio.stats['pushes']} pushes, {_plural(ripio.stats['drops'], 'drop')}, {_plural(reconnects, 'reconnect')}, "
        f"{_plural(ripio.stats['skipped'], 'lost message id')}, {backfilled} via backfill"
    )
    figures.append(_Figures("ripio", len(ripio_transfers), ripio.stats["states"], traffic, outcomes, relisted))
    deliveries = plan.deliveries
    attempts = sum(len(d.attempts) for d in deliveries)
    traffic = (
        f"{len(deliveries)} signed deliveries ({sum(d.redelivery for d in deliveries)} re-deliveries, "
        f"{_late_deliveries(plan)} late), {attempts} posts ({sender.answers_lost} answer lost, retried)"
    )
    answered = Counter({outcome.value: webhook.stats[result] for result, outcome in _WEBHOOK_RESULTS.items()})
    states = sum(len(t.states) for t in sender.transfers)
    figures.append(_Figures("openxswitch", len(sender.transfers), states, traffic, answered))
    transfers, states, traffic, outcomes = polled
    figures.append(_Figures("binance", transfers, states, traffic, outcomes))
    transfers, states, traffic, outcomes = pushed
    figures.append(_Figures("fireblocks", transfers, states, traffic, outcomes))
    return figures


def _line(record: Any, width: int) -> str:
    """One record, its key padded to ``width`` (the longest key read back) so the columns align."""
    if record.topic.endswith("dlq.v1"):
        headers = {k: v.decode() for k, v in record.headers}
        return (
            f"{record.key.decode():<{width}} {'DEAD-LETTER':<10} reason={headers.get('dlq_reason')!r} "
            f"raw={record.value[:40]!r}"
        )
    event = orjson.loads(record.value)
    return (
        f"{event['key']:<{width}} {event['status']:<10} state={event['provider_status']:<9} "
        f"conf={str(event['confirmations']):<4} via={event['source']['via']:<8} {event['amount']} {event['asset']}"
    )


def _provider_rank(record: Any) -> int:
    """Read-back grouped by provider, dead letters last; a stable sort keeps each key's order."""
    if record.topic.endswith("dlq.v1"):
        return len(PROVIDERS)
    prefix = record.key.decode().split(":", 1)[0]
    return PROVIDERS.index(prefix) if prefix in PROVIDERS else len(PROVIDERS)


def _counts(outcomes: Sequence[Outcome] | Mapping[str, int]) -> str:
    counted = Counter(o.value for o in outcomes) if not isinstance(outcomes, Mapping) else outcomes
    return ", ".join(f"{o.value}={counted.get(o.value, 0)}" for o in Outcome)


async def run_demo(bootstrap: str, state_dir: Path, topics: TopicSettings | None = None) -> int:
    """Document examples, then every simulator live, through one running service; 0 when the
    consumer read back exactly what the service reported written. ``topics``: default names unless
    given (tests pass their own, so a shared broker cannot mix runs)."""
    webhook_secret = secrets.token_hex(24)
    async with (
        OkxSimulator(seed=5, first_ids=(88165500, 63754600)) as okx,
        RipioSimulator(seed=5) as ripio,
        fast_simulator(seed=5) as binance,
        FireblocksSimulator(seed=5) as fireblocks,
    ):
        settings = _service_settings(bootstrap, state_dir, okx, ripio, webhook_secret, topics, binance, fireblocks)
        app = BridgeApp(settings, install_signal_handlers=False)
        runner = asyncio.create_task(app.run(), name="bridge")
        started = asyncio.create_task(app.started.wait())
        await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            print(f"the service did not start (exit code {int(runner.result())})")
            return int(runner.result())
        assert app.pipeline is not None
        host, port = app.http.addresses["webhooks"]
        print(f"service running on http://{host}:{port}, sources: " + ", ".join(s.name for s in app.sources))
        names = app.settings.topics
        reader = _TailReader(bootstrap, [names.deposit, names.withdrawal, names.dead_letter])
        try:
            await reader.start()
            items = example_items()
            broken = b'{"requestId":"demo","method":"withdraw.confirmed","params":{"amount":1e999999'
            items.append(DeadLetter(Provider.OPENXSWITCH, "webhook", "invalid JSON: truncated body", broken, _now()))
            repeats = [i for i in items if isinstance(i, TransferEvent)]
            outcomes = await app.pipeline.submit_all(items + repeats)  # every example pushed twice
            print(f"\ndocument examples: {len(outcomes)} payloads: {_counts(outcomes)}")
            print("\nlive: the simulators at once against the real adapters (loopback WebSocket, REST, webhooks, polls):")
            figures = await _run_live(app, okx, ripio, webhook_secret, binance, fireblocks)
            for figure in figures:
                print("  " + figure.line())
        except BaseException:
            await reader.stop()
            raise
        finally:
            app.request_stop("demo finished")
            code = await runner
    if code != ExitCode.OK:
        await reader.stop()
        print(f"the service stopped with exit code {int(code)} ({code.name})")
        return int(code)
    expect = sum(1 for o in outcomes if o in (Outcome.PUBLISHED, Outcome.DEAD_LETTERED)) + sum(f.written for f in figures)
    records = sorted(await reader.read(expect), key=_provider_rank)
    print(f"\nservice stopped cleanly; a consumer reads back {len(records)} records from {bootstrap} (read_committed):\n")
    width = max((len(record.key or b"") for record in records), default=0)
    for record in records:
        print("  " + _line(record, width))
    return 0 if len(records) == expect else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transfer-bridge demo", description=__doc__)
    parser.parse_args(argv)
    # Reconnect warnings would interleave with the figures that count them; errors still show.
    quiet = {"aiokafka": "CRITICAL", "bridge_testkit.okx.simulator.wire": "ERROR", "bridge_testkit.ripio.simulator.wire": "ERROR"}
    configure_logging("ERROR", "text", quiet)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with tempfile.TemporaryDirectory(prefix="transfer-bridge-demo-") as tmp:
        if bootstrap:
            return asyncio.run(run_demo(bootstrap, Path(tmp)))
        from bridge_testkit.kafka_broker import LocalKafka

        print("starting a local Kafka broker (first run downloads it from Maven Central)...")
        with LocalKafka() as broker:
            return asyncio.run(run_demo(broker.bootstrap, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())


COMMAND = ExtraCommand(
    main=main,
    help="push the provider documents' examples through a real Kafka and show what a consumer reads",
    description="Starts a local Kafka broker unless KAFKA_BOOTSTRAP_SERVERS is set.",
)
