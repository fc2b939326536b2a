"""``transfer-bridge``: the command line of the service (also ``python -m bridge``)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

if TYPE_CHECKING:
    from bridge.service.settings import BridgeSettings

__all__ = ["main", "build_parser", "EXIT_CODES", "ExtraCommand"]

EXIT_CODES = {
    0: "ok: stopped on request with everything accepted acknowledged by Kafka (check-config: valid)",
    1: "unexpected error (a bug; the traceback is in the log) / schemas: incompatible schema",
    2: "usage or configuration error, or a port / dedup file that cannot be used",
    3: "Kafka (or the schema registry) unreachable at start within startup.kafka_timeout_seconds",
    4: "shutdown deadline passed with items not yet acknowledged by Kafka (none was acked upstream)",
    5: "fenced: another instance took over the exactly-once transactional id",
}

DESCRIPTION = """\
Crypto deposit/withdrawal feeds of the installed providers normalized into one versioned transfer
event on Kafka: at least once, deduplicated, in order per transfer."""


def _providers_help() -> str:
    """The installed providers as the registry knows them: section, source kind, summary."""
    from bridge.ingest.plugins import registered

    lines = [f"  {plugin.name:<12} {plugin.kind:<8} {plugin.summary}".rstrip() for plugin in registered()]
    return "providers (configuration section, source kind, what it reads):\n" + ("\n".join(lines) or "  none installed")

EPILOG = (
    """\
configuration (highest priority first):
  BRIDGE_<SECTION>__<FIELD>=value     environment, e.g. BRIDGE_KAFKA__BOOTSTRAP_SERVERS=k1:9092;
                                       list items by index or name: BRIDGE_OKX__ACCOUNTS__MAIN__API_KEY
  --secrets-dir DIR / BRIDGE_SECRETS_DIR   one file per setting (a mounted Kubernetes Secret),
                                       named like the variable without BRIDGE_: okx__accounts__main__api_key
  --config FILE / BRIDGE_CONFIG        YAML (.yaml/.yml/.json) or TOML (.toml)
  any setting x may be given as x_file (value read from that path), e.g. BRIDGE_KAFKA__SASL_PASSWORD_FILE
  `transfer-bridge check-config` shows the result with secrets redacted.

exit codes:
"""
    + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
)


def _config_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    default = None if top else argparse.SUPPRESS  # a subcommand's option must not erase the global one
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help="configuration file, YAML or TOML (default: $BRIDGE_CONFIG; none: defaults + environment)",
    )
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help="directory of secret files, one setting per file (default: $BRIDGE_SECRETS_DIR)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-bridge",
        description=f"{DESCRIPTION}\n\n{_providers_help()}",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _config_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the service: every enabled source into Kafka; /healthz /readyz /metrics",
        description="Run every enabled source under supervision, the webhook listener (server.port) and "
        "health/metrics (server.admin_port) until SIGTERM/SIGINT, then drain and exit within "
        "shutdown.deadline_seconds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_options(run)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print it with secrets redacted",
        description="Load the configuration exactly as `run` would, validate it and print the effective "
        "values (secrets as **********). Exit 0 when valid, 2 with one message naming the field when not.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_options(check)
    check.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format (default: yaml)")

    for name, command in extra_commands().items():  # e.g. `demo`, from the development tools
        commands.add_parser(name, help=command.help, description=command.description, add_help=False)

    from bridge.service.schemas_cli import add_schema_commands

    add_schema_commands(commands)

    from bridge.service.reconcile_cli import add_reconcile_command

    add_reconcile_command(commands)

    from bridge.service.dlq.cli import add_dlq_commands

    add_dlq_commands(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transfer-bridge")
    except PackageNotFoundError:
        return "unknown"


def _load(args: argparse.Namespace) -> BridgeSettings:
    from bridge.service.app import ServiceSettings
    from bridge.service.settings import load_settings

    return load_settings(ServiceSettings, config_file=args.config, secrets_dir=args.secrets_dir)


def _fail(message: str, code: int = 2) -> int:
    print(f"transfer-bridge: {message}", file=sys.stderr)
    return code


def _check_config(args: argparse.Namespace, settings: BridgeSettings) -> int:
    document: dict[str, Any] = settings.model_dump(mode="json")  # SecretStr → "**********"
    if args.format == "json":
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    print(_summary(args, settings), file=sys.stderr)
    return 0


def _summary(args: argparse.Namespace, settings: BridgeSettings) -> str:
    from bridge.ingest.plugins import registered

    config = args.config or os.environ.get("BRIDGE_CONFIG")
    variables = sorted(n for n in os.environ if n.startswith("BRIDGE_") and n not in ("BRIDGE_CONFIG", "BRIDGE_SECRETS_DIR"))
    sections = [(plugin.name, getattr(settings, plugin.name)) for plugin in registered()]
    enabled = [f"{name} ({section.describe()})" for name, section in sections if section.enabled]
    lines = [
        "configuration valid",
        f"  file: {config or '(none)'}",
        f"  secrets dir: {settings.secrets_dir or '(none)'}",
        f"  environment: {', '.join(variables) or '(none)'}",
        f"  sources: {', '.join(enabled) or 'none enabled'}",
    ]
    if settings.cluster.enabled:
        from bridge.service.cluster.layout import describe_layout

        lines.extend(describe_layout(settings))
    return "\n".join(lines)


def _run(settings: BridgeSettings, args: argparse.Namespace | None = None) -> int:
    from bridge.observability.logs import configure_logging, register_secrets
    from bridge.service.app import BridgeApp
    from bridge.service.settings import secret_values

    register_secrets(secret_values(settings))
    configure_logging(settings.log.level, settings.log.format, settings.log.levels)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        reload = (lambda: _load(args)) if args is not None else None
        config = getattr(args, "config", None) or os.environ.get("BRIDGE_CONFIG")
        watch = [Path(config)] if config else []
        app = BridgeApp(settings, reload_settings=reload, watch_paths=watch)
        return int(loop.run_until_complete(app.run()))
    except Exception:  # a bug: say so in the log format operators collect, with exit code 1
        logging.getLogger("bridge.service.cli").exception("unexpected error; exiting", extra={"exit_code": 1})
        return 1
    finally:
        _close_loop(loop, timeout=2.0)


def _close_loop(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """Like ``asyncio.run``'s cleanup, but bounded: a source task that ignores cancellation must
    not keep the process alive past its shutdown deadline."""
    leftovers = asyncio.all_tasks(loop)
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.wait(leftovers, timeout=timeout))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@dataclass(frozen=True)
class ExtraCommand:
    """A subcommand contributed by another installed package (entry point group
    ``transfer_bridge.commands``); it parses its own arguments."""

    main: Callable[[list[str]], int]
    help: str
    description: str = ""


@functools.cache
def extra_commands() -> dict[str, ExtraCommand]:
    found: dict[str, ExtraCommand] = {}
    for entry in entry_points(group="transfer_bridge.commands"):
        command = entry.load()
        if isinstance(command, ExtraCommand):
            found[entry.name] = command
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"] and "demo" not in extra_commands():
        print(
            "transfer-bridge: `demo` comes with the development tools, which are not installed here "
            "(from a checkout: `make demo`, or `pip install -e ./testkit`)",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    extra = extra_commands().get(args.command)
    if extra is not None:  # everything after the command's name belongs to it
        return int(extra.main(list(rest)))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    from bridge.service.settings import ConfigError

    needs_settings = args.command in ("run", "check-config") or getattr(args, "schemas_command", None) != "export"
    settings = None
    if needs_settings:
        try:
            settings = _load(args)
        except ConfigError as exc:
            return _fail(str(exc))
    if args.command == "check-config":
        assert settings is not None
        return _check_config(args, settings)
    if args.command == "run":
        assert settings is not None
        return _run(settings, args)
    args.settings = settings  # schemas: read by bridge.service.schemas_cli
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
