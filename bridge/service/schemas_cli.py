"""``transfer-bridge schemas export|check|register``: the contract's gate against a schema registry.

* ``export`` writes ``schemas/`` from the model (JSON Schema, Avro, the frozen version file);
  ``--check`` only reports what is stale (for CI).
* ``register`` sets each subject to BACKWARD_TRANSITIVE and registers every committed version
  of the topic's major, oldest first. Idempotent: the same files give the same ids.
* ``check`` asks the registry whether the model's schema (or ``--schema FILE``) is compatible
  with every registered version and exits 1 with the registry's reason when it is not.

Subjects follow the configured strategy (TopicNameStrategy, ``<topic>-value``, by default) for
both event topics. ``bridge/cli.py`` mounts these with ``add_schema_commands``; until then
``python -m bridge.service.schemas_cli …`` works the same.

Exit codes: 0 fine, 1 incompatible / contract rule broken, 2 registry unreachable or misconfigured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.contract.events import SCHEMA_MAJOR, SCHEMA_VERSION
from bridge.contract.schema import SCHEMA_DIR, PublishedVersionChanged, SchemaVersion, committed_versions, export, schema_text
from bridge.kafka.registry import (
    COMPATIBILITY_LEVELS,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    SubjectNotFound,
    subject_name,
)
from bridge.kafka.settings import SchemaRegistrySettings
from bridge.service.settings import BridgeSettings

__all__ = [
    "add_schema_commands",
    "run",
    "main",
    "Registration",
    "SubjectCheck",
    "register_contract",
    "check_contract",
    "major_of_topic",
]

TRANSITIVE_LEVELS = ("BACKWARD_TRANSITIVE", "FULL_TRANSITIVE")
_MAJOR_SUFFIX = re.compile(r"\.v(\d+)$")


@dataclass(frozen=True, slots=True)
class Registration:
    subject: str
    contract_version: str
    registry_version: int
    schema_id: int


@dataclass(slots=True)
class SubjectCheck:
    """The registry's verdict for one subject; ``compatible`` is None when nothing is registered."""

    subject: str
    compatible: bool | None
    level: str | None = None
    versions: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def major_of_topic(topic: str) -> int:
    """``transfers.deposit.v1`` → 1; a topic without a ``.v<N>`` suffix carries the current major."""
    match = _MAJOR_SUFFIX.search(topic)
    return int(match.group(1)) if match else SCHEMA_MAJOR


def _subjects(topics: Sequence[str], strategy: str) -> dict[str, str]:
    """subject → topic, first topic wins (``record_name`` maps every topic to one subject)."""
    subjects: dict[str, str] = {}
    for topic in topics:
        subjects.setdefault(subject_name(topic, strategy), topic)
    return subjects


async def register_contract(
    client: RegistryClient,
    topics: Sequence[str],
    *,
    strategy: str = "topic_name",
    level: str = "BACKWARD_TRANSITIVE",
    directory: Path = SCHEMA_DIR,
) -> list[Registration]:
    """Set each subject's level, then register every committed version of the topic's major."""
    done: list[Registration] = []
    for subject, topic in _subjects(topics, strategy).items():
        versions = committed_versions(major_of_topic(topic), directory)
        if not versions:
            raise ValueError(f"no committed schema version for major v{major_of_topic(topic)} (topic {topic})")
        await client.set_compatibility(subject, level)  # first, so every later version is gated
        for version in versions:
            done.append(await _register_one(client, subject, version))
    return done


async def _register_one(client: RegistryClient, subject: str, version: SchemaVersion) -> Registration:
    text = version.text
    schema_id = await client.register(subject, text)
    found = await client.lookup(subject, text)
    return Registration(subject, version.version, found.version if found else -1, schema_id)


async def check_contract(
    client: RegistryClient, topics: Sequence[str], schema: str, *, strategy: str = "topic_name"
) -> list[SubjectCheck]:
    """Test ``schema`` against every registered version of each subject (transitive by construction)."""
    results: list[SubjectCheck] = []
    for subject in _subjects(topics, strategy):
        try:
            versions = await client.versions(subject)
        except SubjectNotFound:
            versions = []
        if not versions:
            results.append(SubjectCheck(subject, None, messages=["nothing registered yet: nothing to break"]))
            continue
        level = await client.get_compatibility(subject)
        result = SubjectCheck(subject, True, level, versions)
        if level == "NONE":
            result.compatible = False
            result.messages.append(
                "the registry enforces nothing here (compatibility NONE); run `schemas register`, "
                "which sets BACKWARD_TRANSITIVE"
            )
        for version in versions:
            verdict = await client.test_compatibility(subject, schema, version=version)
            if not verdict.is_compatible:
                result.compatible = False
                reasons = "; ".join(verdict.messages) or "no reason given"
                result.messages.append(f"incompatible with version {version}: {reasons}")
        results.append(result)
    return results


# -- command line -------------------------------------------------------------------------------


def add_schema_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Mount ``schemas export|check|register``; the parsed args carry ``func(args) -> exit code``."""
    schemas = subparsers.add_parser("schemas", help="contract schemas: export, check against a registry, register")
    commands = schemas.add_subparsers(dest="schemas_command", required=True, metavar="{export,check,register}")

    exporter = commands.add_parser("export", help="write schemas/ from the model")
    exporter.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schemas directory (default: %(default)s)")
    exporter.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")

    checker = commands.add_parser("check", help="is the local schema compatible with what the registry holds?")
    _registry_options(checker)
    checker.add_argument("--schema", type=Path, help="schema file to check (default: the model's schema)")

    registrar = commands.add_parser("register", help="register every committed version (idempotent)")
    _registry_options(registrar)
    registrar.add_argument(
        "--compatibility", default="BACKWARD_TRANSITIVE", choices=COMPATIBILITY_LEVELS,
        help="subject compatibility level to set (default: %(default)s)",
    )
    schemas.set_defaults(func=run)
    return schemas


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-url",
        help="Confluent-compatible base URL (default: schema_registry.url from settings, else $SCHEMA_REGISTRY_URL); "
        "credentials come from settings (BRIDGE_SCHEMA_REGISTRY__USERNAME/__PASSWORD), never from the command line",
    )
    parser.add_argument("--topic", action="append", dest="topics", help="event topic (repeatable; default: both configured topics)")
    parser.add_argument("--subject-strategy", choices=("topic_name", "record_name", "topic_record_name"))


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``schemas …`` command; returns the process exit code."""
    if args.schemas_command == "export":
        return _export(args)
    settings: BridgeSettings = getattr(args, "settings", None) or BridgeSettings()
    registry = _registry_settings(settings.schema_registry, args)
    if registry is None:
        print("no schema registry: pass --registry-url, set BRIDGE_SCHEMA_REGISTRY__URL or SCHEMA_REGISTRY_URL", file=sys.stderr)
        return 2
    topics = args.topics or [settings.topics.deposit, settings.topics.withdrawal]
    try:
        if args.schemas_command == "register":
            return asyncio.run(_register(registry, topics, args.compatibility))
        return asyncio.run(_check(registry, topics, args.schema))
    except RegistryUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _registry_settings(configured: SchemaRegistrySettings, args: argparse.Namespace) -> SchemaRegistrySettings | None:
    url = args.registry_url or configured.url or os.environ.get("SCHEMA_REGISTRY_URL")
    if not url:
        return None
    update: dict[str, Any] = {"url": url}
    if args.subject_strategy:
        update["subject_strategy"] = args.subject_strategy
    return configured.model_copy(update=update)


def _export(args: argparse.Namespace) -> int:
    try:
        changed = export(args.dir, write=not args.check)
    except PublishedVersionChanged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'} {path}")
    if args.check and changed:
        print("schema files differ from the model: run `transfer-bridge schemas export` and commit", file=sys.stderr)
        return 1
    if not changed:
        print(f"schemas up to date (contract {SCHEMA_VERSION})")
    return 0


async def _register(settings: SchemaRegistrySettings, topics: list[str], level: str) -> int:
    async with RegistryClient.from_settings(settings) as client:
        try:
            registrations = await register_contract(client, topics, strategy=settings.subject_strategy, level=level)
        except RegistryError as exc:
            print(f"error: registration refused by {client.url}: {exc}", file=sys.stderr)
            return 1
    for r in registrations:
        print(f"{r.subject}  contract {r.contract_version}  registry version {r.registry_version}  id {r.schema_id}")
    print(f"subjects set to {level}")
    return 0


async def _check(settings: SchemaRegistrySettings, topics: list[str], schema_file: Path | None) -> int:
    if schema_file is None:
        try:
            stale = export(write=False)  # the model must not have changed a published version
        except PublishedVersionChanged as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if stale:
            print("note: committed schema files differ from the model; run `schemas export`", file=sys.stderr)
        schema, label = schema_text(), f"model (contract {SCHEMA_VERSION})"
    else:
        schema, label = schema_file.read_text(), str(schema_file)
    async with RegistryClient.from_settings(settings) as client:
        try:
            results = await check_contract(client, topics, schema, strategy=settings.subject_strategy)
        except RegistryError as exc:
            if isinstance(exc, RegistryUnavailable):
                raise
            print(f"error: {client.url} could not check {label}: {exc}", file=sys.stderr)
            return 1
    failed = False
    for result in results:
        if result.compatible is None:
            print(f"{result.subject}: {result.messages[0]}")
            continue
        stream = sys.stdout if result.compatible else sys.stderr  # a failing subject reads as one block
        verdict = "compatible" if result.compatible else "INCOMPATIBLE"
        print(f"{result.subject}: {label} is {verdict} (level {result.level}, versions {result.versions})", file=stream)
        if result.level not in TRANSITIVE_LEVELS and result.level != "NONE":
            print(f"  note: level {result.level} only guards the latest version; `schemas register` sets BACKWARD_TRANSITIVE", file=stream)
        for message in result.messages:
            print(f"  {message}", file=stream)
        failed |= not result.compatible
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.service.schemas_cli", description="contract schema commands")
    add_schema_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
