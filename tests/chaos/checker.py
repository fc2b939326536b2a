"""What Kafka holds after a chaos run, against the simulators' ground truth: the measures every
provider shares (losses explained by a kill, duplicates, states published backwards) and reading
the topics back with ``read_committed``.

A provider's truth is, per event key, the list of its states in order; a *state* is whatever
identifies one in a published value (``state_of``), so the same code checks a WebSocket feed's
fingerprints, a poll's rows and a webhook's event ids.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from tests.chaos.report import ProviderFigures

__all__ = [
    "KILL_SLACK", "StateOf", "fingerprint", "healthy_seconds", "stream_figures", "duplicates", "older_after_newer",
    "read_all", "split", "all_in", "finals_in",
]  # fmt: skip

KILL_SLACK = 5.0
"""A lost intermediate state counts as lost at a kill when Kafka was up for at most this long
between the moment it became current and a SIGKILL of the bridge: events reach Kafka within
milliseconds otherwise."""

StateOf = Callable[[dict[str, Any]], Hashable]
"""A published value → the state it shows (comparable with the truth's states)."""


def fingerprint(value: dict[str, Any]) -> Hashable:
    """The state of a WebSocket or OpenXSwitch value: provider status, confirmations, hash."""
    return (value["provider_status"], value["confirmations"], value["tx_hash"])


def healthy_seconds(start: float, end: float, outages: list[tuple[float, float]]) -> float:
    """Seconds of ``[start, end]`` during which Kafka was up (outside every broker outage)."""
    down = sum(max(0.0, min(end, b) - max(start, a)) for a, b in outages)
    return (end - start) - down


def stream_figures(
    truth: Mapping[str, Sequence[Hashable]],
    values: list[dict[str, Any]],
    state_of: StateOf,
    became_current: Mapping[str, Sequence[float]],
    kills: list[float],
    outages: list[tuple[float, float]],
    *,
    known: Mapping[str, Iterable[Hashable]] | None = None,
) -> ProviderFigures:
    """Kafka against a provider that shows only the current state (WebSocket pushes, history
    rows changed in place): losses split by whether a kill explains them — the state became
    current, and a SIGKILL of the bridge followed before Kafka had been reachable for
    ``KILL_SLACK`` seconds (an event waits in memory while the broker is down). ``known``: every
    state the provider went through, when ``truth`` holds only those a reader could see."""
    seen: dict[str, list[Hashable]] = defaultdict(list)
    for value in values:
        seen[value["key"]].append(state_of(value))
    figures = ProviderFigures(transfers=len(truth), states=sum(len(h) for h in truth.values()), records=len(values))
    for key, history in truth.items():
        got = seen.get(key, [])
        got_set = set(got)
        times = became_current.get(key, [])
        for index, state in enumerate(history):
            if state in got_set:
                continue
            figures.lost += 1
            if index == len(history) - 1:
                figures.lost_final += 1
                continue
            since = times[index] if index < len(times) else 0.0
            ages = [healthy_seconds(since, kill, outages) for kill in kills if kill >= since]
            ages = [age for age in ages if age <= KILL_SLACK]
            if ages:
                figures.lost_at_bridge_kill += 1
                oldest = max(figures.detail.get("lost_at_kill_max_kafka_up_s", 0.0), min(ages))
                figures.detail["lost_at_kill_max_kafka_up_s"] = round(oldest, 3)
            else:
                figures.lost_unexplained += 1
                figures.detail.setdefault("unexplained_examples", []).append(f"{key}#{index}")
        in_order = [s for s in dict.fromkeys(got) if s in history]
        if set(history) <= got_set and in_order != list(history):
            figures.out_of_order += 1
    every = known if known is not None else truth
    figures.unknown_records = sum(1 for v in values if state_of(v) not in set(every.get(v["key"], ())))
    if "unexplained_examples" in figures.detail:
        figures.detail["unexplained_examples"] = figures.detail["unexplained_examples"][:10]
    duplicates(figures, values, state_of)
    figures.older_after_newer = older_after_newer(values, state_of, every)
    return figures


def duplicates(figures: ProviderFigures, values: list[dict[str, Any]], state_of: StateOf) -> None:
    """Records repeating an ``event_id``, and states published under two different ids."""
    ids = Counter(value["event_id"] for value in values)
    duplicated = {i: n for i, n in ids.items() if n > 1}
    figures.duplicates_by_event_id = sum(n - 1 for n in duplicated.values())
    figures.distinct_event_ids_duplicated = len(duplicated)
    by_state: dict[tuple[str, Hashable], set[str]] = defaultdict(set)
    for value in values:
        by_state[(value["key"], state_of(value))].add(value["event_id"])
    figures.same_state_different_event_ids = sum(1 for ids_ in by_state.values() if len(ids_) > 1)


def older_after_newer(values: list[dict[str, Any]], state_of: StateOf, truth: Mapping[str, Iterable[Hashable]]) -> int:
    """Records (in Kafka order: one key lives on one partition) of a state that comes before a
    state of the same transfer already published — what a consumer reading "the last record of a
    key is the current state" would see go backwards."""
    positions = {key: {state: i for i, state in reversed(list(enumerate(history)))} for key, history in truth.items()}
    furthest: dict[str, int] = {}
    backwards = 0
    for value in values:
        position = positions.get(value["key"], {}).get(state_of(value))
        if position is None:
            continue
        if position < furthest.get(value["key"], -1):
            backwards += 1
        furthest[value["key"]] = max(position, furthest.get(value["key"], -1))
    return backwards


async def read_all(bootstrap: str, topics: dict[str, Any]) -> tuple[list[ConsumedRecord], list[ConsumedRecord]]:
    """Every event and every dead letter of the run (``read_committed``), events in Kafka order."""
    records: list[ConsumedRecord] = []
    for name in ("deposit", "withdrawal"):
        records += await read_topic(bootstrap, topics[name], idle=1.5, timeout=120)
    dead = await read_topic(bootstrap, topics["dead_letter"], idle=0.5, timeout=10)
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    return records, dead


def split(records: Iterable[ConsumedRecord], providers: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Published values by provider (the key's prefix), each list in Kafka order."""
    by_provider: dict[str, list[dict[str, Any]]] = {name: [] for name in providers}
    for record in records:
        value = json.loads(record.value)
        by_provider.setdefault(value["key"].split(":", 1)[0], []).append(value)
    return by_provider


def finals_in(truth: Mapping[str, Sequence[Hashable]], values: list[dict[str, Any]], state_of: StateOf) -> bool:
    """Is every transfer's last state published?"""
    have = {(v["key"], state_of(v)) for v in values}
    return all((key, history[-1]) in have for key, history in truth.items() if history)


def all_in(truth: Mapping[str, Sequence[Hashable]], values: list[dict[str, Any]], state_of: StateOf) -> bool:
    """Is every state of every transfer published?"""
    have = {(v["key"], state_of(v)) for v in values}
    return all((key, state) in have for key, history in truth.items() for state in history)
