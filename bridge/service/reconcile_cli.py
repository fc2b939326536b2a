"""``transfer-bridge reconcile``: does Kafka hold what the providers say happened?

For every enabled provider whose plugin declares a history API, each account's transfers created
in the window are read (the backfill's own clients: same signing, pacing and parsers), then the
latest state per key from the event topics (``read_committed``), both spilled into a temporary
SQLite file and joined there (``bridge.consumer.reconcile``). Providers are read before Kafka, so
a state the service publishes while the command runs is not reported missing.

``--repair`` publishes the provider's current state of every repairable transfer (missing in
Kafka, or not final there and different) through the service's own pipeline, built from the same
configuration, so the dedup gate applies: a state it already published is not sent twice, a
final one is never overtaken. In exactly-once mode it uses its own transactional id
(``<dedup.transactional_id>-reconcile``) so the running service is not fenced.

Exit codes: 0 clean (or every drift repaired), 1 drift, 2 configuration or I/O error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson

from bridge.consumer.latest import TopicScan
from bridge.consumer.reconcile import Drift, DriftKind, Ledger, Window
from bridge.contract.events import TransferEvent
from bridge.contract.timeutil import format_utc_ms, to_epoch_ms
from bridge.delivery.pipeline import Outcome
from bridge.ingest.history import AccountHistory
from bridge.ingest.plugins import registered
from bridge.service.beside import side_pipeline
from bridge.service.dlq.render import safe_text
from bridge.service.settings import BridgeSettings

__all__ = ["add_reconcile_command", "run", "reconcile", "Report", "parse_moment"]

log = logging.getLogger(__name__)

BATCH = 5_000
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(ValueError):
    """Bad arguments or configuration for this command: exit 2."""


def parse_moment(text: str, now: datetime) -> datetime:
    """An RFC 3339 time (``2026-11-28T00:00:00Z``, a date alone is midnight UTC) or a duration
    back from now (``24h``, ``7d``, ``90m``)."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        try:
            return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
        except OverflowError:  # a usage error, not a crash: exit 2 with one line, no traceback
            raise UsageError(f"{text[:40]!r} reaches before the year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is neither an RFC 3339 time nor a duration like 24h or 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _with_history() -> str:
    """The installed providers that can list an account's transfers (``ProviderPlugin.history``)."""
    from bridge.ingest.plugins import registered

    return ", ".join(plugin.name for plugin in registered() if plugin.history is not None) or "none installed"


def add_reconcile_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "reconcile",
        help="compare each provider's history with the latest state per transfer in Kafka",
        description=f"For each configured account with a history API ({_with_history()}), read the "
        "provider's current state of every transfer created in the window and the latest state per key on the "
        "event topics (read_committed), and report the differences. Exit 0 clean, 1 drift, 2 configuration or I/O error.",
    )
    parser.add_argument("--since", default="24h", help="window start: RFC 3339 time or a duration back from now (default: 24h)")
    parser.add_argument("--until", default="0s", help="window end (exclusive), same forms (default: now)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="report format (default: table)")
    parser.add_argument("--provider", action="append", dest="providers", metavar="NAME", help="only this provider (repeatable)")
    parser.add_argument("--repair", action="store_true", help="publish the provider's current state of what is missing or behind")
    parser.add_argument(
        "--skew", type=float, default=3600.0, metavar="SECONDS",
        help="Kafka is read from records written this long before --since (default: 3600)",
    )  # fmt: skip
    parser.add_argument("--spill-dir", type=Path, default=None, help="directory of the temporary comparison file (default: the system's)")
    parser.set_defaults(func=run)
    return parser


@dataclass
class Report:
    """What one run found, apart from the drift rows (which are streamed)."""

    window: Window
    accounts: list[dict[str, Any]] = field(default_factory=list)
    not_compared: list[dict[str, str]] = field(default_factory=list)
    kafka: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    repairable: int = 0
    repair: dict[str, int] | None = None
    seconds: float = 0.0

    @property
    def drift(self) -> int:
        return sum(self.kinds.values())

    @property
    def exit_code(self) -> int:
        if self.repair is not None:  # clean when every drift row was put right by the repair
            return 0 if self.repair.get(Outcome.PUBLISHED.value, 0) == self.drift == self.repairable else 1
        return 1 if self.drift else 0


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``reconcile`` command; returns the exit code."""
    from bridge.observability.logs import configure_logging, register_secrets
    from bridge.service.settings import secret_values

    settings: BridgeSettings = args.settings
    register_secrets(secret_values(settings))
    configure_logging(settings.log.level, settings.log.format, settings.log.levels)
    try:
        now = datetime.now(UTC)
        window = Window(to_epoch_ms(format_utc_ms(parse_moment(args.since, now))), to_epoch_ms(format_utc_ms(parse_moment(args.until, now))))
        if window.until_ms <= window.since_ms:
            raise UsageError("--until must be later than --since")
        return asyncio.run(reconcile(settings, window, args, sys.stdout))
    except UsageError as exc:
        print(f"transfer-bridge reconcile: {exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug: never exit 1, which a scheduler reads as "drift found"
        log.exception("reconcile failed; exiting 2")
        return 2


def _histories(settings: BridgeSettings, only: Sequence[str] | None, report: Report) -> list[AccountHistory]:
    found: list[AccountHistory] = []
    known = {plugin.name for plugin in registered()}
    for name in only or ():
        if name not in known:
            raise UsageError(f"no provider {name!r} is installed (known: {', '.join(sorted(known))})")
    for plugin in registered():
        section = getattr(settings, plugin.name)
        if (only and plugin.name not in only) or not section.enabled:
            continue
        if plugin.history is None:
            report.not_compared.append({"provider": plugin.name, "reason": "no history API (webhooks only): not compared"})
            continue
        try:
            readers = plugin.histories(section)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{plugin.name}: history cannot be read with this configuration ({exc.__class__.__name__}: {exc})") from None
        if not readers:
            report.not_compared.append({"provider": plugin.name, "reason": "no account with REST history credentials: not compared"})
        found.extend(readers)
    if not found:
        raise UsageError("no enabled provider account with a history API to compare")
    return found


async def reconcile(
    settings: BridgeSettings, window: Window, args: argparse.Namespace, out: TextIO, *, histories: Sequence[AccountHistory] | None = None
) -> int:
    """One run; ``histories`` replaces the configured providers' readers (benchmarks, tools)."""
    report = Report(window)
    if histories is None:
        histories = _histories(settings, args.providers, report)
    started = time.monotonic()
    with Ledger(window, keep_events=args.repair, directory=args.spill_dir) as ledger:
        for history in histories:
            try:
                report.accounts.append(await _read_history(history, ledger, window))
            except Exception as exc:  # refused credentials, a provider down past its retries: no partial verdict
                print(f"transfer-bridge reconcile: {history.name}: history could not be read: {_said(exc)}", file=sys.stderr)
                return 2
        providers = frozenset(h.provider.value for h in histories)
        scan = TopicScan(settings.kafka, [settings.topics.deposit, settings.topics.withdrawal], since_ms=window.since_ms, skew_ms=int(args.skew * 1000))
        try:
            async for batch in scan.batches():
                ledger.add_kafka(batch, providers)
        except Exception as exc:  # unreachable broker, missing topic, authorization
            print(f"transfer-bridge reconcile: Kafka could not be read: {_said(exc)}", file=sys.stderr)
            return 2
        report.kafka = {"records": scan.records, "unreadable": scan.unreadable}
        report.sizes = ledger.sizes()
        writer = JsonWriter(out, report) if args.format == "json" else TableWriter(out, report)
        writer.head()
        for drift in ledger.drift():
            report.kinds[(drift.provider, drift.kind.value)] += 1
            report.repairable += drift.repairable
            writer.row(drift)
        report.seconds = time.monotonic() - started
        if args.repair and report.repairable:
            code = await _repair(settings, ledger, report)
            if code:
                return code
        writer.tail()
    compared = sum(size["at_provider"] + size["in_kafka"] for size in report.sizes.values())
    log.info("reconcile compared %d transfer states in %.1fs", compared, report.seconds)
    return report.exit_code


async def _read_history(history: AccountHistory, ledger: Ledger, window: Window) -> dict[str, Any]:
    listed = unreadable = 0
    batch: list[TransferEvent] = []
    async for item in history.transfers(window.since_ms, window.until_ms):
        if isinstance(item, TransferEvent):
            batch.append(item)
            if len(batch) >= BATCH:
                listed += ledger.add_provider(history.name, batch)
                batch = []
        else:
            unreadable += 1
    listed += ledger.add_provider(history.name, batch)
    return {"source": history.name, "provider": history.provider.value, "listed": listed, "unreadable": unreadable}


async def _repair(settings: BridgeSettings, ledger: Ledger, report: Report) -> int:
    try:
        # Beside the running service: its own transactional id, and a gate that sees what the
        # service publishes meanwhile (bridge.service.beside); refused in cluster mode.
        pipeline = side_pipeline(settings, "reconcile")
        await pipeline.start(timeout=settings.startup.kafka_timeout_seconds)
    except (OSError, ValueError, ConnectionError) as exc:
        print(f"transfer-bridge reconcile: repair cannot start: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 2
    outcomes: Counter[str] = Counter()

    def count(future: asyncio.Future[Outcome]) -> None:
        outcomes["failed" if future.cancelled() or future.exception() else future.result().value] += 1

    try:
        for event in ledger.repairs():
            (await pipeline.offer(event)).add_done_callback(count)
    finally:
        drained = await pipeline.close(timeout=settings.shutdown.deadline_seconds)
    report.repair = dict(outcomes)
    if not drained:
        print("transfer-bridge reconcile: repair: not every state was acknowledged by Kafka in time", file=sys.stderr)
        return 2
    return 0


# -- output ------------------------------------------------------------------------------------------


def _iso(epoch_ms: int) -> str:
    return format_utc_ms(datetime.fromtimestamp(epoch_ms / 1000, tz=UTC))


def _counts(report: Report) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for provider, size in sorted(report.sizes.items()):
        out[provider] = {**size, **{kind.value: report.kinds[(provider, kind.value)] for kind in DriftKind}}
    return out


def _verdict(report: Report) -> str:
    if not report.drift:
        return "clean: every transfer matches"
    text = f"drift: {report.drift} transfers differ, {report.repairable} repairable"
    if report.repair is None:
        return text + (" (run again with --repair)" if report.repairable else "")
    done = ", ".join(f"{name} {count}" for name, count in sorted(report.repair.items()))
    return f"{text}; repair: {done}"


class TableWriter:
    COLUMNS = ("{:<23}", "{:<56}", "{:<16}", "{:<24}", "{:<24}", "{}")

    def __init__(self, out: TextIO, report: Report):
        self.out = out
        self.report = report
        self.rows = 0

    def _line(self, *cells: str) -> None:
        # keys and statuses come from provider payloads: escaped, as dlq prints them, for the terminal
        self.out.write("  ".join(f.format(safe_text(c)) for f, c in zip(self.COLUMNS, cells, strict=True)).rstrip() + "\n")

    def head(self) -> None:
        r = self.report
        self.out.write(f"reconcile: transfers created {_iso(r.window.since_ms)} .. {_iso(r.window.until_ms)}\n")
        for account in r.accounts:
            self.out.write(f"  {account['source']:<24} {account['listed']} transfers listed, {account['unreadable']} rows not normalized\n")
        for item in r.not_compared:
            self.out.write(f"  {item['provider']:<24} {item['reason']}\n")
        self.out.write(f"  {'kafka':<24} {r.kafka.get('records', 0)} records read, {r.kafka.get('unreadable', 0)} not transfer events\n")

    def row(self, d: Drift) -> None:
        if not self.rows:
            self.out.write("\n")
            self._line("drift", "key", "account", "at provider", "in kafka", "kafka record")
        self.rows += 1
        at = f"{d.at_provider} ({d.provider_detail})" if d.at_provider else "-"
        kafka = f"{d.in_kafka} ({d.kafka_detail})" if d.in_kafka else "-"
        self._line(d.kind.value, d.key, d.account or "-", at, kafka, d.kafka_position or "-")

    def tail(self) -> None:
        self.out.write("\n")
        kinds = [kind.value for kind in DriftKind]
        self.out.write(f"{'provider':<12} {'at provider':>11} {'in kafka':>9} {'matching':>9} " + " ".join(f"{k:>{len(k)}}" for k in kinds) + "\n")
        for provider, counts in _counts(self.report).items():
            cells = " ".join(f"{counts[k]:>{len(k)}}" for k in kinds)
            self.out.write(f"{provider:<12} {counts['at_provider']:>11} {counts['in_kafka']:>9} {counts['matching']:>9} {cells}\n")
        self.out.write(_verdict(self.report) + "\n")


class JsonWriter:
    """One JSON document, its ``drift`` array streamed row by row."""

    def __init__(self, out: TextIO, report: Report):
        self.out = out
        self.report = report
        self.first = True

    def head(self) -> None:
        r = self.report
        head = {
            "window": {"since": _iso(r.window.since_ms), "until": _iso(r.window.until_ms), "by": "created_at"},
            "accounts": r.accounts,
            "not_compared": r.not_compared,
            "kafka": r.kafka,
        }
        self.out.write(orjson.dumps(head).decode()[:-1] + ',"drift":[')

    def row(self, d: Drift) -> None:
        item = {
            "kind": d.kind.value, "key": d.key, "provider": d.provider, "account": d.account, "created_at": _iso(d.created_ms),
            "at_provider": d.at_provider, "provider_status": d.provider_detail, "in_kafka": d.in_kafka,
            "kafka_provider_status": d.kafka_detail, "kafka_record": d.kafka_position, "repairable": d.repairable,
        }  # fmt: skip
        self.out.write(("" if self.first else ",") + "\n" + orjson.dumps(item).decode())
        self.first = False

    def tail(self) -> None:
        r = self.report
        tail = {"counts": _counts(r), "drift_total": r.drift, "repairable": r.repairable, "repair": r.repair, "clean": r.exit_code == 0 and not r.drift}
        self.out.write("\n]," + orjson.dumps(tail).decode()[1:] + "\n")


def _said(exc: BaseException) -> str:
    """An error for the terminal: its text may quote a provider's answer (escapes, a key echoed back),
    so registered secrets are masked and control characters escaped."""
    from bridge.observability.logs import REDACTOR

    return safe_text(REDACTOR.redact(f"{exc.__class__.__name__}: {exc}"))
