"""The ingress record of a webhook delivery: what the receiving replica writes, the slot owner reads."""

from __future__ import annotations

from decimal import Decimal

from bridge.contract.events import Account, DeadLetter, Direction, Provider, Source, Status, TransferEvent, build_event, encode_event
from bridge.delivery.ingress import IngressPublisher, decode_ingress
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.slots import slot_of
from bridge.kafka.settings import KafkaSettings
from bridge.service.dlq.records import DeadLetterRecord


def _event() -> TransferEvent:
    return build_event(
        provider=Provider.OPENXSWITCH,
        direction=Direction.DEPOSIT,
        transfer_id="fa36a1009aecac22ae386fb8",
        status=Status.PENDING,
        provider_status="pending",
        amount="0.300000000000000000000000000001",
        asset="BCH",
        occurred_at="2026-11-29T05:00:00.000Z",
        received_at="2026-11-29T05:00:01.000Z",
        source=Source(channel="deposit.pending"),
        account=Account(id="acct"),
        raw={"params": {"amount": Decimal("0.300000000000000000000000000001"), "big": 123456789012345678901234567890}},
    )


def test_an_ingress_record_reads_back_as_the_same_event_with_every_raw_digit() -> None:
    event = _event()
    record = IngressPublisher(KafkaSettings(), TopicSettings(), ingress_topic="ingress", slots=4, group_id="g").event_record(event)
    assert record.topic == "ingress" and record.key == event.key.encode()
    assert record.partition == slot_of(event.key, 4)
    back = decode_ingress(record.value, "openxswitch")
    assert back == event
    assert encode_event(back) == encode_event(event)
    assert b"0.300000000000000000000000000001" in encode_event(back)


def test_an_ingress_record_that_is_not_an_event_is_kept_whole_as_a_dead_letter() -> None:
    letter = decode_ingress(b'{"not": "an event"}', "openxswitch")
    assert isinstance(letter, DeadLetter)
    assert letter.raw == b'{"not": "an event"}' and letter.channel == "ingress"
    assert letter.reason.startswith("ingress record not a transfer event")


def test_an_ingress_dead_letter_keeps_the_provider_its_key_names() -> None:
    letter = decode_ingress(b"not json", "okx")
    assert isinstance(letter, DeadLetter) and letter.provider is Provider.OKX


def test_an_ingress_dead_letter_whose_key_names_no_known_provider_is_unknown_not_a_guess() -> None:
    """The DLQ's ``dlq_provider`` header says ``unknown`` (the contract's generic form), so a
    replay finds no parser for it rather than handing the bytes to some provider's."""
    topics = TopicSettings()
    for provider in ("", "nosuchvenue", "\ufffd"):
        letter = decode_ingress(b'{"not": "an event"}', provider)
        assert isinstance(letter, DeadLetter) and letter.provider is Provider.UNKNOWN
        record = Publisher(KafkaSettings(), topics).dead_letter_record(letter)
        assert (record.topic, dict(record.headers)["dlq_provider"]) == (topics.dead_letter, b"unknown")
        assert record.key == b"unknown:ingress"
        read = DeadLetterRecord(0, 0, 0, record.value, dict(record.headers))  # as `dlq` reads it back
        assert (read.provider, read.letter().provider, read.letter().raw) == ("unknown", Provider.UNKNOWN, letter.raw)
