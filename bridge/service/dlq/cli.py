"""``transfer-bridge dlq list|show|replay``: the dead-letter topic for an operator.

``list`` and ``show`` only read (no consumer group, nothing committed); ``replay`` publishes
through a pipeline built from the service's own configuration and keeps its progress in a
consumer group. Exit codes: 0 done (a replay's still-failing payloads are in its report), 2 usage
or configuration error, 3 Kafka unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import sys
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.errors import KafkaError

from bridge.service.dlq import render
from bridge.service.dlq.records import Filter, consumer_for, parse_time, scan
from bridge.service.dlq.replay import Reparsers, Replayer, ReplayReport, replay

if TYPE_CHECKING:
    from bridge.service.settings import BridgeSettings

__all__ = ["add_dlq_commands", "run", "reparsers", "replay_dead_letters", "default_group"]


def add_dlq_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Mount ``dlq list|show|replay``; the parsed args carry ``func(args) -> exit code``."""
    dlq = subparsers.add_parser("dlq", help="dead letters: list, show, replay with today's parsers")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,replay}")

    lister = commands.add_parser("list", help="one line per dead letter (read_committed; nothing committed)")
    _filters(lister)
    lister.add_argument("--limit", type=int, default=100, help="at most this many records (default: %(default)s)")
    lister.add_argument("--width", type=int, default=80, help="payload bytes shown per line (default: %(default)s)")

    shower = commands.add_parser("show", help="every header and the payload of dead letters")
    shower.add_argument("positions", nargs="*", metavar="PARTITION:OFFSET", help="records to show (default: what the filters select)")
    _filters(shower)
    shower.add_argument("--limit", type=int, default=10, help="at most this many records (default: %(default)s)")
    shower.add_argument("--max-bytes", type=int, default=4096, help="payload bytes shown per record (default: %(default)s)")

    replayer = commands.add_parser("replay", help="parse again with today's parsers and publish what now normalizes")
    _filters(replayer)
    replayer.add_argument("--dry-run", action="store_true", help="parse and report only: publish, dead-letter and commit nothing")
    replayer.add_argument(
        "--group", help="consumer group keeping the progress (default: <kafka.client_id>-dlq-replay, plus a digest of the filters if any)"
    )
    replayer.add_argument(
        "--max-replays", type=int, default=3, help="a payload that failed this many replays is not tried again (default: %(default)s)"
    )
    replayer.add_argument("--batch", type=int, default=500, help="records per batch between two commits (default: %(default)s)")
    dlq.set_defaults(func=run)
    return dlq


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", help="dead-letter topic (default: topics.dead_letter)")
    parser.add_argument("--provider", action="append", default=[], help="only this provider (repeatable)")
    parser.add_argument("--channel", action="append", default=[], help="only this channel (repeatable)")
    parser.add_argument("--reason", help="only reasons containing this text (case-insensitive)")
    parser.add_argument("--since", help="written at or after: RFC 3339 time or a time ago (30m, 2h, 7d)")
    parser.add_argument("--until", help="written at or before: RFC 3339 time or a time ago")
    parser.add_argument("--partition", type=int, action="append", default=[], help="only this partition (repeatable)")
    parser.add_argument("--from-offset", type=int, help="first offset (in every partition read)")
    parser.add_argument("--to-offset", type=int, help="last offset, inclusive")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text, or one JSON object per line (default: text)")


def _filter(args: argparse.Namespace) -> Filter:
    positions = set()
    for text in getattr(args, "positions", None) or ():
        partition, _, offset = text.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ValueError(f"{text!r} is not PARTITION:OFFSET")
        positions.add((int(partition), int(offset)))
    return Filter(
        providers=frozenset(args.provider),
        channels=frozenset(args.channel),
        reason=args.reason,
        since_ms=parse_time(args.since) if args.since else None,
        until_ms=parse_time(args.until) if args.until else None,
        partitions=frozenset(args.partition),
        from_offset=args.from_offset,
        to_offset=args.to_offset,
        positions=frozenset(positions),
    )


def reparsers(settings: BridgeSettings) -> Reparsers:
    """Each installed provider's dead-letter parser, bound to its section of ``settings``."""
    from bridge.ingest.plugins import registered

    found: dict[str, Any] = {}
    for plugin in registered():
        parser = plugin.reparser()
        if parser is not None:
            found[plugin.provider.value] = functools.partial(parser, getattr(settings, plugin.name, None))
    return found


def default_group(settings: BridgeSettings, selected: Filter) -> str:
    """One group per selection: a narrowed replay must not mark the records it left out as done."""
    group = f"{settings.kafka.client_id}-dlq-replay"
    if selected.narrows:
        # sorted, not repr(): a frozenset's order changes from one process to the next
        canonical = orjson.dumps({name: sorted(value) if isinstance(value, frozenset) else value
                                  for name, value in vars(selected).items()}, option=orjson.OPT_SORT_KEYS)
        group += "-" + hashlib.sha1(canonical).hexdigest()[:10]
    return group


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``dlq …`` command; returns the process exit code."""
    settings: BridgeSettings = args.settings
    try:
        selected = _filter(args)
    except ValueError as exc:
        print(f"transfer-bridge dlq: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or settings.topics.dead_letter
    try:
        if args.dlq_command == "replay":
            return asyncio.run(_replay(args, settings, topic, selected))
        return asyncio.run(_read(args, settings, topic, selected))
    except (KafkaError, ConnectionError, OSError) as exc:
        print(f"transfer-bridge dlq: Kafka at {settings.kafka.bootstrap_servers} not usable: {exc}", file=sys.stderr)
        return 3


async def _read(args: argparse.Namespace, settings: BridgeSettings, topic: str, selected: Filter) -> int:
    consumer = consumer_for(settings.kafka)
    shown = 0
    try:
        await consumer.start()
        async for batch in scan(consumer, topic, selected):
            for record, matches in batch:
                if not matches:
                    continue
                if args.format == "json":
                    limit = args.max_bytes if args.dlq_command == "show" else args.width
                    sys.stdout.write(render.as_json(record, limit=limit).decode() + "\n")
                elif args.dlq_command == "show":
                    sys.stdout.write(render.detail(record, limit=args.max_bytes) + "\n\n")
                else:
                    sys.stdout.write(render.line(record, width=args.width) + "\n")
                shown += 1
                if shown >= args.limit:
                    return 0
    finally:
        await consumer.stop()
    if args.format == "text":
        print(f"{shown} dead letter(s) in {topic}", file=sys.stderr)
    return 0


async def _replay(args: argparse.Namespace, settings: BridgeSettings, topic: str, selected: Filter) -> int:
    from bridge.observability.logs import configure_logging, register_secrets
    from bridge.service.settings import secret_values

    register_secrets(secret_values(settings))
    configure_logging(settings.log.level, settings.log.format, settings.log.levels)
    report = await replay_dead_letters(
        settings, selected, topic=topic, dry_run=args.dry_run, group=args.group, max_replays=args.max_replays, batch=args.batch
    )
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
    else:
        print(report.text())
    return 0


async def replay_dead_letters(
    settings: BridgeSettings,
    selected: Filter | None = None,
    *,
    topic: str | None = None,
    dry_run: bool = False,
    group: str | None = None,
    max_replays: int = 3,
    batch: int = 500,
) -> ReplayReport:
    """``dlq replay`` without the command line: the pipeline built from ``settings`` as the service
    builds it (its own transactional id in exactly-once mode), the progress in ``group``."""
    from bridge.delivery.assemble import build_pipeline

    selected = selected or Filter()
    pipeline = None
    if not dry_run:
        # Its own transactional id: a replay beside the running service must not fence it.
        own_id = f"{settings.dedup.transactional_id or settings.kafka.client_id + '-0'}-dlq-replay"
        dedup = settings.dedup.model_copy(update={"transactional_id": own_id})
        pipeline = build_pipeline(settings.kafka, settings.topics, dedup, settings.pipeline, settings.schema_registry)
        await pipeline.start(timeout=settings.startup.kafka_timeout_seconds)
    consumer = consumer_for(settings.kafka, group_id=group or default_group(settings, selected))
    try:
        await consumer.start()
        replayer = Replayer(reparsers(settings), pipeline, max_replays=max_replays)
        return await replay(consumer, topic or settings.topics.dead_letter, selected, replayer, commit=pipeline is not None, batch=batch)
    finally:
        await consumer.stop()
        if pipeline is not None:
            await pipeline.close(timeout=settings.shutdown.deadline_seconds)
