"""The cluster benchmark's Ripio flood: accounts split evenly over the slots, message ids as a fresh
connection numbers them, and every state one event the bridge publishes (none dead-lettered)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from bridge.service.cluster.layout import source_slot
from tests.benchmarks.ripio_load import build_ripio_flood, flood_records, slot_accounts


def test_accounts_are_spread_evenly_over_the_slots() -> None:
    accounts = slot_accounts(3, 4)
    slots = Counter(source_slot("ripio", f"ripio:{a.name}", 4) for a in accounts)
    assert slots == {0: 3, 1: 3, 2: 3, 3: 3}
    assert len({a.api_token for a in accounts}) == len(accounts)


async def test_flood_ids_repeats_and_events() -> None:
    accounts = slot_accounts(2, 2)
    flood = await build_ripio_flood(accounts, 3_000)
    assert flood.events == 3_000
    assert flood.states + flood.repeats == flood.events
    assert 0.19 <= flood.repeats / flood.events <= 0.3
    ids: dict[tuple[str, str], list[int]] = defaultdict(list)
    bodies: Counter[str] = Counter()
    for name, text in flood.frames:
        message = json.loads(text, parse_float=str)  # amounts compared as written
        ids[name, message["topic"]].append(message["id"])
        bodies[json.dumps(message["body"], sort_keys=True)] += 1
    assert all(seq == list(range(1, len(seq) + 1)) for seq in ids.values())  # no gap, none reused
    assert {name for name, _ in ids} == {a.name for a in accounts}
    assert len(bodies) == flood.states and sum(bodies.values()) - len(bodies) == flood.repeats
    event_ids, records = flood_records(flood, limit=100)
    assert len(event_ids) == flood.states  # every state parses to its own event
    assert len(records) == 100 and all(r["direction"] in ("deposit", "withdrawal") for r in records)
