"""Finding 2 (Reliability): a signed body that the webhook accepts but Kafka cannot take whole.

The webhook accepted bodies up to ``max_body_bytes`` (1 MiB) while a Kafka record is capped at
``kafka.max_request_size`` (1,000,000): a valid delivery of 1,000,498 bytes was answered 200 while
only a 64 KiB cut of it reached the DLQ, so the provider never sent it again.

Now the limits agree (checked at start), a delivery is acknowledged only once it is stored whole,
and the DLQ value is the raw body, byte for byte.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bridge.contract.events import DeadLetter, Provider
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.ingest.settings import RECORD_OVERHEAD_BYTES
from bridge.kafka.settings import KafkaSettings
from bridge.service.app import ServiceSettings
from bridge.service.settings import ConfigError, load_settings
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from tests.conftest import PipelineFactory
from tests.openxswitch.conftest import SECRET, ReceiverFactory, read_all

RECEIVED_AT = "2026-11-22T10:00:00.000Z"


def transfer_of_size(size: int, *, padded: str = "memo", transfer_id: str = "big-1") -> bytes:
    """A valid ``withdraw.confirmed`` delivery of exactly ``size`` bytes, ``padded`` made long to get there."""
    params = m.withdrawal_params(
        transfer_id=transfer_id,
        status="confirmed",
        amount=Decimal("9"),
        updated_at="2025-05-05T00:53:29.206Z",
        created_at="2025-05-05T00:53:29.206Z",
        wallet_id="6812b103908d2d0d49c7ff79",
    )
    params[padded] = "0x"
    bare = len(m.delivery_body("req-big", m.WITHDRAW_CONFIRMED, params))
    params[padded] = "0x" + "a" * (size - bare)
    body = m.delivery_body("req-big", m.WITHDRAW_CONFIRMED, params)
    assert len(body) == size
    return body


def test_the_default_body_limit_and_record_overhead_fit_the_default_record_limit() -> None:
    assert OpenXSwitchConfig().max_body_bytes + RECORD_OVERHEAD_BYTES <= KafkaSettings().max_request_size


def test_record_overhead_bounds_the_largest_dead_letter_the_engine_writes() -> None:
    """Every sender-chosen part of a webhook dead letter is capped by the engine (reason 2000
    characters, header texts 256); at four bytes a character the record still fits the overhead."""
    widest = "\U0001f4a5"
    letter = DeadLetter(
        provider=Provider.OPENXSWITCH,
        channel=widest * 256,
        reason=widest * 2000,
        raw=b"",
        received_at=RECEIVED_AT,
        account_id=widest * 256,
        headers={"content_type": widest * 256, "request_id": widest * 256},
    )
    record = Publisher(KafkaSettings(), TopicSettings()).dead_letter_record(letter)
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
    assert size <= RECORD_OVERHEAD_BYTES


def test_a_body_limit_kafka_cannot_carry_is_a_configuration_error_naming_both_settings(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("openxswitch:\n  enabled: true\n  max_body_bytes: 1048576\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(ServiceSettings, config_file=config, environ={"BRIDGE_OPENXSWITCH__SECRETS": SECRET})
    message = str(caught.value)
    assert "openxswitch.max_body_bytes" in message and "kafka.max_request_size" in message, message
    # either side fixes it
    load_settings(ServiceSettings, config_file=config, environ={"BRIDGE_OPENXSWITCH__SECRETS": SECRET,
                                                               "BRIDGE_KAFKA__MAX_REQUEST_SIZE": "1100000"})


@pytest.mark.kafka
async def test_a_receiver_built_with_limits_that_disagree_is_refused(
    make_pipeline: PipelineFactory, kafka_settings: KafkaSettings
) -> None:
    pipeline = await make_pipeline(kafka=kafka_settings.model_copy(update={"max_request_size": 500_000}))
    with pytest.raises(ValueError, match=r"max_body_bytes.*max_request_size"):
        OpenXSwitchWebhook(OpenXSwitchConfig(enabled=True, secrets=[SECRET]), pipeline)


@pytest.mark.kafka
async def test_a_signed_delivery_between_the_record_limit_and_a_mebibyte_is_refused_not_acknowledged_cut(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    """The adversarial run's delivery: 1,000,498 bytes, default settings everywhere."""
    receiver = await make_receiver()
    body = transfer_of_size(1_000_498)
    status, answer = await receiver.post(body)
    assert status == 413, (status, answer)
    assert await read_all(kafka_bootstrap, topics.dead_letter) == []
    assert await read_all(kafka_bootstrap, topics.withdrawal) == []


@pytest.mark.kafka
async def test_a_delivery_at_the_body_limit_whose_event_is_too_large_is_kept_whole_in_the_dlq(
    make_receiver: ReceiverFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    """The event carries the body in ``raw`` plus the normalized fields, so a long transaction hash
    counts twice and the event no longer fits a record although the body does: the raw body goes
    to the DLQ as it was received (before: ``{"raw": …}`` re-encoded by the pipeline), then the 200."""
    receiver = await make_receiver()
    body = transfer_of_size(receiver.webhook.config.max_body_bytes, padded="hash")
    status, answer = await receiver.post(body)
    assert (status, answer.get("result")) == (200, "dead_lettered"), (status, answer)
    [letter] = await read_all(kafka_bootstrap, topics.dead_letter)
    assert letter.value == body
    assert "too large" in letter.headers["dlq_reason"].decode()
    assert await read_all(kafka_bootstrap, topics.withdrawal) == []
