"""Benchmark suite: every bridge figure next to a baseline measured in the same run, as a ratio.

    python -m tests.benchmarks [--quick] [--only throughput,latency,...] [--bootstrap HOST:PORT] [--profile]

Starts its own single-node Kafka broker (``deploy/local/kafka.sh``, free port, temporary data)
unless ``--bootstrap`` names one. Scenarios: throughput, latency, webhooks, connections, poll, dedup, cluster.
Prints one table and writes every figure, the machine, versions and message sizes to
``bench-results/bench-<UTC time>[-quick].json`` (plus the table as ``.md``). ``--quick`` runs every
scenario smaller (under two minutes; cluster only when named in ``--only``): a smoke check, no thresholds. The exit code is non-zero only
when a scenario could not run, never because a target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks.common import KAFKA_OPTIONS_ENV, REPO, RESULTS_DIR, Context, delete_topics, listener_pid
from tests.benchmarks.report import Row, ScenarioResult, render_table

__all__ = ["main", "SCENARIOS"]

Scenario = Callable[[Context], Awaitable[ScenarioResult]]


def _scenario(module: str) -> Scenario:
    async def run(ctx: Context) -> ScenarioResult:
        from importlib import import_module

        return await import_module(f"tests.benchmarks.{module}").run(ctx)

    return run


SCENARIOS: dict[str, Scenario] = {
    "throughput": _scenario("throughput"),
    "latency": _scenario("latency"),
    "webhooks": _scenario("webhooks"),
    "connections": _scenario("connections"),
    "poll": _scenario("poll"),
    "dedup": _scenario("dedup_state"),
    "cluster": _scenario("cluster_bench"),
}
FULL_ONLY = {"cluster"}
"""Left out of ``--quick`` unless named in ``--only``: replica processes' start and group joins
alone take 20–35 s on a loaded 2-core machine, too much for a smoke run."""


def _broker_pid_for(bootstrap: str) -> int | None:
    """The broker's pid when ``--bootstrap`` points at this machine (for its CPU): the repository's
    own dev broker, else whoever listens on that port."""
    directory = REPO / ".kafka"
    try:
        port = (directory / "kafka.port").read_text().strip()
        if bootstrap.endswith(f":{port}"):
            return int((directory / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        pass
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host in ("127.0.0.1", "localhost", "[::1]") and port.isdigit():
        return listener_pid(int(port))  # a broker on this machine: its CPU is ours to report too
    return None


async def _run(args: argparse.Namespace) -> int:
    from tests.benchmarks.baselines import kcat_binary
    from tests.benchmarks.machine import load_average, machine_info

    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    if args.quick and not args.only:
        names = [n for n in names if n not in FULL_ONLY]
        print(f"--quick leaves out {', '.join(sorted(FULL_ONLY))} (full runs, or --quick --only {','.join(sorted(FULL_ONLY))})")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    for option in args.kafka_option:
        name, _, value = option.partition("=")
        try:
            overrides[name.strip()] = json.loads(value)
        except ValueError:
            overrides[name.strip()] = value
    if overrides:
        os.environ[KAFKA_OPTIONS_ENV] = json.dumps(overrides)  # workers inherit it
        print(f"Kafka settings overridden for bridge and baselines: {overrides}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(exist_ok=True)
    began = time.monotonic()
    broker = None
    info = machine_info(kcat_binary(lambda text: print(f"  · {text}")))
    print(f"transfer-bridge benchmarks ({'quick' if args.quick else 'full'}) on {info['cpu_model']} × {info['cpus_usable']}, "
          f"Python {info['python']}, Kafka {info['kafka']}, load {info['load_average_at_start']}", flush=True)
    if args.bootstrap:
        bootstrap, broker_pid = args.bootstrap, _broker_pid_for(args.bootstrap)
        print(f"Kafka: {bootstrap} (given)", flush=True)
    else:
        from bridge_testkit.kafka_broker import LocalKafka

        broker = LocalKafka()
        bootstrap = await asyncio.to_thread(broker.start)
        pid_file = broker.directory / "kafka.pid"
        broker_pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
        print(f"Kafka: started a local broker at {bootstrap} ({time.monotonic() - began:.1f}s)", flush=True)
    results: list[ScenarioResult] = []
    failed: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    ctx = Context(
        bootstrap=bootstrap, quick=args.quick, workdir=workdir, broker_pid=broker_pid, shared_broker=broker is None, profile=args.profile
    )
    try:
        for name in names:
            print(f"\n== {name}", flush=True)
            started = time.monotonic()
            try:
                result = await SCENARIOS[name](ctx)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                traceback.print_exc()
                failed.append(name)
                result = ScenarioResult(name, skipped=f"failed: {exc.__class__.__name__}: {str(exc)[:300]}")
            result.figures["seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            if result.rows:
                print(render_table(result.rows), flush=True)
            print(f"   ({result.figures['seconds']}s)", flush=True)
        if args.profile:
            from tests.benchmarks.throughput import profile

            path = RESULTS_DIR / f"profile-{stamp}.txt"
            print("\n== profile of the throughput hot path (py-spy, else pyinstrument)", flush=True)
            await profile(ctx, path)
            print(f"   written to {path.relative_to(REPO)} (+ raw stacks or HTML next to it)", flush=True)
    finally:
        await delete_topics(bootstrap, ctx.topics_created)
        if broker is not None:
            await asyncio.to_thread(broker.cleanup)
        if args.keep:
            print(f"worker logs and files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    rows: list[Row] = [row for result in results for row in result.rows]
    info["load_average_at_end"] = load_average()
    elapsed = time.monotonic() - began
    document: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started_utc": stamp,
        "seconds": round(elapsed, 1),
        "machine": info,
        "kafka": {"bootstrap": bootstrap, "own_broker": broker is not None, "settings_overridden": overrides},
        "rows": [row.as_dict() for row in rows],
        "scenarios": {r.name: {"figures": r.figures, "skipped": r.skipped} for r in results},
    }
    base = RESULTS_DIR / f"bench-{stamp}{'-quick' if args.quick else ''}{'-whatif' if overrides else ''}"
    base.with_suffix(".json").write_text(json.dumps(document, indent=2, default=str))
    base.with_suffix(".md").write_text(render_table(rows, markdown=True) + "\n")
    print(f"\n== all scenarios ({elapsed:.0f}s, load {info['load_average_at_start']} → {info['load_average_at_end']})")
    print(render_table(rows))
    for result in results:
        if result.skipped:
            print(f"{result.name}: {result.skipped}")
    print(f"\nresults: {base.with_suffix('.json').relative_to(REPO)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under two minutes (CI smoke check)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    parser.add_argument("--profile", action="store_true", help="also profile the throughput hot path with pyinstrument")
    parser.add_argument("--kafka-option", action="append", default=[], metavar="NAME=VALUE",
                        help="override a KafkaSettings field for the bridge and the baselines alike (e.g. linger_ms=2): what-if runs")
    parser.add_argument("--keep", action="store_true", help="keep the worker logs and scratch files (printed at the end)")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
