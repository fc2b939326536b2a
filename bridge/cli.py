"""The ``transfer-bridge`` command line.

Exit codes: 0 success, 1 the command ran and found a problem, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from bridge.demo import main as demo_main

    return demo_main([])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-bridge",
        description="Crypto deposit/withdrawal feeds (OKX, Ripio, OpenXSwitch) normalized into one transfer event on Kafka.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="start a local broker, run the providers' payloads through the pipeline, print what a consumer reads")
    demo.set_defaults(func=_demo)
    from bridge.schemas_cli import add_schema_commands

    add_schema_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)
