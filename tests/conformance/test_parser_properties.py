"""The shared parser properties, over every pure parse entry point of every provider with a harness.

For any JSON a provider could send — its own valid messages bent field by field, or bytes broken on
the wire, read the way its transport reads them — a parser

* never raises (the parser contract of ``bridge.contract.parsing``): a payload it cannot read at
  all is one refusal with a reason (the engine dead-letters that payload), never mixed with events;
* gives amounts and fees as exact decimal strings equal to what the provider sent, never a float;
* gives events that validate against the contract schema and become Kafka records, and dead
  letters that carry the raw bytes and a reason.

The properties are ``tests/fuzz/properties.py``'s; the inputs are seeded with the harness's
simulator payloads. Derandomized like the fuzz suite (``FUZZ_RANDOM=1`` explores,
``FUZZ_EXAMPLES=n`` runs longer).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bridge.contract.events import DeadLetter
from bridge.contract.parsing import refused
from bridge_testkit.conformance import ParserEntry, harness_for, harness_names
from tests.fuzz.properties import check_results
from tests.fuzz.report import fuzz_settings, outcome, tried
from tests.fuzz.strategies import Deep, mutated, to_json, wire_bytes

EXAMPLES = 100

def feed(entry: ParserEntry, data: bytes) -> None:
    """``data`` read by each of the transport's readers (a payload they refuse is dead-lettered by
    the transport, never parsed), then parsed and checked."""
    for read in entry.readers:
        try:
            value = read(data)
        except ValueError:  # JSONError, orjson.JSONDecodeError: the transport dead-letters these bytes
            continue
        if entry.objects_only and not isinstance(value, dict):
            continue  # the transport dead-letters a frame that is not an object
        tried(entry.name)
        results = entry.parse(value)  # the parser contract: never raises
        whole = refused(results)
        if whole is not None:
            assert whole.reason, f"{entry.name} refused without a reason"
            outcome(entry.name, "refused")
            continue
        assert not any(isinstance(r, DeadLetter) and r.refused for r in results), f"{entry.name}: a refusal among other results"
        events, letters = check_results(results, amount=entry.amount, fee=entry.fee)
        outcome(entry.name, "events", events)
        outcome(entry.name, "dead_letters", letters)


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_a_parser_given_its_own_messages_bent_field_by_field_never_raises_and_gives_exact_valid_events(
    parser_entry: ParserEntry, data: st.DataObject
) -> None:
    sample = data.draw(st.sampled_from(parser_entry.samples), label="sample")
    value: Any = data.draw(mutated(sample, floats=parser_entry.floats), label="bent")
    feed(parser_entry, to_json(value))


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_a_parser_given_bytes_broken_on_the_wire_never_raises_and_gives_exact_valid_events(
    parser_entry: ParserEntry, data: st.DataObject
) -> None:
    sample = data.draw(st.sampled_from(parser_entry.samples), label="sample")
    feed(parser_entry, data.draw(wire_bytes(sample, floats=parser_entry.floats), label="bytes"))


def test_a_parser_reads_each_of_its_seed_messages_into_events(parser_entry: ParserEntry) -> None:
    """The properties above are only as good as their seeds: each sample, unbent and read by the
    transport's first reader, gives at least one event and nothing dead-lettered or refused."""
    assert parser_entry.samples
    read = parser_entry.readers[0]
    for sample in parser_entry.samples:
        events, letters = check_results(parser_entry.parse(read(to_json(sample))), amount=parser_entry.amount, fee=parser_entry.fee)
        assert events >= 1 and letters == 0, sample


def test_an_item_nested_deeper_than_the_encoder_writes_is_a_dead_letter_not_a_recursion_error() -> None:
    """One field 600 levels deep inside an otherwise valid item, read exactly as the transports
    read it: the parser must dead-letter the item (or refuse the message), never raise."""
    raised: list[str] = []
    for name in harness_names():
        for entry in harness_for(name).parsers():
            document = copy.deepcopy(entry.samples[0])
            item = document
            while True:  # the first transfer item of the sample: a row, a push's data[0], a body, the params
                if isinstance(item, list):
                    item = item[0]
                    continue
                inner = next((item[k] for k in ("data", "body", "params") if isinstance(item.get(k), (dict, list))), None)
                if inner is None:
                    break
                item = inner
            item["extra"] = Deep(600)
            try:
                entry.parse(entry.readers[-1](to_json(document)))
            except RecursionError:
                raised.append(entry.name)
    assert raised == []
