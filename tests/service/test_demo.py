"""`make demo` is the README's main job: it must keep working end to end, every provider live."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.delivery.settings import TopicSettings
from bridge_testkit.demo import run_demo

pytestmark = pytest.mark.kafka


async def test_demo_runs_every_providers_simulator_and_reads_back_what_it_wrote(
    kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(kafka_bootstrap, tmp_path, topics) == 0  # 0 = read back exactly what was written
    out = capsys.readouterr().out
    assert "document examples: 13 payloads: published=6, duplicate=6, stale_after_final=0, dead_lettered=1" in out
    live = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and " transfers " in line}
    assert set(live) == {"okx", "ripio", "openxswitch", "binance", "fireblocks"}
    assert " drop" in live["okx"] and " drop" in live["ripio"] and "lost message id" in live["ripio"]
    assert "1 answer lost, retried" in live["openxswitch"]
    assert "answered 429, Retry-After obeyed" in live["binance"]
    assert "1 answer lost, retried; 1 never delivered, 1 via backfill" in live["fireblocks"]
    assert "1 older state not published" in live["fireblocks"]
    for provider in ("okx", "ripio", "openxswitch", "binance", "fireblocks"):
        assert f"  {provider}:" in out, f"no {provider} record read back"
    assert "service stopped cleanly" in out and "DEAD-LETTER" in out
