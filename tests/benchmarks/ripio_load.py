"""Ripio load for the cluster scenario: accounts spread evenly over the cluster's slots, and a flood
of stream messages rendered by the simulator's own transfer scripts.

OKX cannot spread: its accounts share the slot of ``okx`` (a master key also receives its
sub-accounts' pushes, so one gate must see both). A Ripio account is a slot of its own
(``blake2b64("ripio:<name>") mod slots``), so ``slot_accounts`` picks account names until every slot
has the same number of them: with as many replicas as slots, every replica owns some.

As in ``okx_load``, the messages are rendered up front by a never-started simulator stepping the
same scripts and replayed through the live simulator's connections with ``send_raw``. Message ids
count per account and topic from 1, as on a fresh connection (the bridge's default
``sequence_start``): a scripted or extra repeat is a new message with the same body, as Ripio sends.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.contract.jsonutil import dumps, loads_exact
from bridge.service.cluster.layout import source_slot
from bridge_testkit.ripio.simulator import SCRIPTS, RipioSimulator, SimAccount

__all__ = ["RipioFlood", "slot_accounts", "build_ripio_flood", "flood_records"]


def slot_accounts(per_slot: int, slots: int, seed: int = 13) -> list[SimAccount]:
    """``per_slot`` accounts in each of ``slots`` slots, reproducible credentials."""
    rng = random.Random(seed)

    def hexa(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    wanted: Counter[int] = Counter()
    accounts: list[SimAccount] = []
    index = 0
    while len(accounts) < per_slot * slots:
        name = f"bench{index:03d}"
        index += 1
        slot = source_slot("ripio", f"ripio:{name}", slots)
        if wanted[slot] < per_slot:
            wanted[slot] += 1
            accounts.append(SimAccount(name, str(uuid.UUID(hexa(32))).upper(), hexa(40), hexa(64)))
    return accounts


@dataclass
class RipioFlood:
    frames: list[tuple[str, str]]
    """(account name, message text) in sending order."""
    states: int
    repeats: int
    transfers: int
    state_frames: list[str]
    """One message per distinct state (its first copy): what the bridge must publish, once each."""

    @property
    def events(self) -> int:
        return len(self.frames)

    def frame_bytes(self) -> float:
        return sum(len(text.encode()) for _, text in self.frames) / max(1, len(self.frames))


async def build_ripio_flood(accounts: Sequence[SimAccount], events: int, *, repeat_fraction: float = 0.2, seed: int = 3) -> RipioFlood:
    """``events`` messages of whole lifecycles (every script, accounts round robin), round robin over
    transfers (a transfer's next state comes after every other's), ``repeat_fraction`` of them
    repeats of the state just sent (scripted repeats included)."""
    renderer = RipioSimulator(list(accounts), seed=seed)  # never started: it only steps the scripts
    names = [a.name for a in accounts]
    scripts = sorted(SCRIPTS)
    per_script = sum(len(SCRIPTS[s][2]) for s in scripts) / len(scripts)
    repeats_wanted = round(events * repeat_fraction)
    count = int(events * (1 - repeat_fraction) / per_script) + len(scripts)
    transfers = [renderer.create(scripts[i % len(scripts)], names[i % len(names)]) for i in range(count)]
    rendered: list[tuple[str, str, str, int]] = []  # (account, topic, body text, scripted copies)
    active = deque(transfers)
    scripted = 0
    while active and len(rendered) + scripted + max(0, repeats_wanted - scripted) < events:
        transfer = active.popleft()
        await renderer.advance(transfer)  # nobody is connected: this only moves the script on
        rendered.append((transfer.owner.name, transfer.topic, dumps(transfer.body()).decode(), transfer.step.repeat))
        scripted += transfer.step.repeat - 1
        if not transfer.finished:
            active.append(transfer)
    extra = max(0, repeats_wanted - scripted)
    every = len(rendered) / extra if extra else 0.0
    next_extra = every / 2
    ids: Counter[tuple[str, str]] = Counter()
    now_ms = int(time.time() * 1000)
    frames: list[tuple[str, str]] = []
    state_frames: list[str] = []

    def message(name: str, topic: str, body: str) -> str:
        ids[name, topic] += 1
        return f'{{"id":{ids[name, topic]},"topic":"{topic}","timestamp":{now_ms},"body":{body}}}'

    for index, (name, topic, body, copies) in enumerate(rendered):
        for copy in range(copies):
            frames.append((name, message(name, topic, body)))
            if copy == 0:
                state_frames.append(frames[-1][1])
        if extra and index >= next_extra:
            frames.append((name, message(name, topic, body)))
            next_extra += every
    return RipioFlood(
        frames=frames,
        states=len(rendered),
        repeats=len(frames) - len(rendered),
        transfers=len({t.key for t in transfers if t.started}),
        state_frames=state_frames,
    )


def flood_records(flood: RipioFlood, limit: int | None = None) -> tuple[set[str], list[dict[str, Any]]]:
    """Parsed with the bridge's own pure parser: every event id the flood must publish, and the
    records it publishes for the first ``limit`` states (exact bytes, for the bare-client baseline)."""
    from bridge.contract.events import TransferEvent
    from bridge.delivery.publish import Publisher
    from bridge.delivery.settings import TopicSettings
    from bridge.kafka.settings import KafkaSettings
    from bridge.sources.ripio.parse import parse_message
    from tests.benchmarks.baselines import now_iso

    publisher = Publisher(KafkaSettings(), TopicSettings())  # only its record builder is used
    received_at = now_iso()
    event_ids: set[str] = set()
    records: list[dict[str, Any]] = []
    for text in flood.state_frames:
        for event in parse_message(loads_exact(text), received_at=received_at):
            if not isinstance(event, TransferEvent):
                raise ValueError(f"the flood holds a message the bridge dead-letters: {event}")
            event_ids.add(event.event_id)
            if limit is None or len(records) < limit:
                record = publisher.event_record(event)
                records.append({
                    "direction": event.direction.value,
                    "key": record.key.decode(),
                    "value": record.value.decode(),
                    "headers": [[n, v.decode()] for n, v in record.headers],
                })
    return event_ids, records
