"""What ``dlq`` commands select: times, filters, and a replay's default consumer group (one per
selection, the same in every process)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from bridge.service.dlq.cli import default_group
from bridge.service.dlq.records import DeadLetterRecord, Filter, parse_time
from bridge.service.settings import BridgeSettings

PROGRAM = """
from bridge.service.dlq.cli import default_group
from bridge.service.dlq.records import DeadLetterRecord, Filter, parse_time
from bridge.service.settings import BridgeSettings
print(default_group(BridgeSettings(), Filter(providers=frozenset({"okx", "ripio", "binance"}), channels=frozenset({"a", "b", "c"}))))
"""


def test_the_whole_topic_has_the_plain_group_and_each_narrowed_selection_its_own() -> None:
    settings = BridgeSettings()
    assert default_group(settings, Filter()) == "transfer-bridge-dlq-replay"
    okx, ripio = default_group(settings, Filter(providers=frozenset({"okx"}))), default_group(settings, Filter(providers=frozenset({"ripio"})))
    assert okx != ripio and okx.startswith("transfer-bridge-dlq-replay-")


def test_the_group_of_a_selection_does_not_depend_on_the_process_hash_seed() -> None:
    names = {
        subprocess.run([sys.executable, "-c", PROGRAM], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert len(names) == 1


NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T04:00:00Z", "2026-11-29T04:00:00+00:00"),
        ("2026-11-29T06:00:00+02:00", "2026-11-29T04:00:00+00:00"),
        ("2026-11-29T04:00:00", "2026-11-29T04:00:00+00:00"),  # no zone: UTC
        ("90m", "2026-11-29T03:30:00+00:00"),
        ("2h", "2026-11-29T03:00:00+00:00"),
        ("7d", "2026-11-22T05:00:00+00:00"),
    ],
)
def test_times_are_rfc3339_or_a_time_ago(text: str, expected: str) -> None:
    assert parse_time(text, now=NOW) == int(datetime.fromisoformat(expected).timestamp() * 1000)


def test_a_time_that_is_neither_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_time("yesterday", now=NOW)


def record(partition: int, offset: int, provider: str = "okx", channel: str = "deposit-info", reason: str = "Missing Field") -> DeadLetterRecord:
    headers = {"dlq_provider": provider.encode(), "dlq_channel": channel.encode(), "dlq_reason": reason.encode()}
    return DeadLetterRecord(partition, offset, 1_000 * offset, b"{}", headers)


def test_every_set_field_of_a_filter_must_match() -> None:
    assert Filter().matches(record(0, 5))
    assert Filter(providers=frozenset({"okx", "ripio"}), reason="missing field").matches(record(0, 5))
    assert not Filter(providers=frozenset({"ripio"})).matches(record(0, 5))
    assert not Filter(channels=frozenset({"stream"})).matches(record(0, 5))
    assert Filter(from_offset=5, to_offset=5).matches(record(0, 5)) and not Filter(to_offset=4).matches(record(0, 5))
    assert Filter(since_ms=5_000, until_ms=5_000).matches(record(0, 5)) and not Filter(since_ms=5_001).matches(record(0, 5))
    assert Filter(positions=frozenset({(1, 5)})).matches(record(1, 5)) and not Filter(positions=frozenset({(1, 5)})).matches(record(0, 5))


def test_an_unreadable_replay_count_counts_as_never_replayed() -> None:
    base = record(0, 1)
    for value, count in ((b"2", 2), (b"x", 0), (b"99999999999", 0), (b"", 0)):
        assert DeadLetterRecord(0, 1, 0, b"", {**base.headers, "dlq_replay_count": value}).replay_count == count
