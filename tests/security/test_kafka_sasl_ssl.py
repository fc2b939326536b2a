"""Kafka over TLS with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), configured through ``KafkaSettings``
only, against a real broker whose certificate comes from a CA made by this test session."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.contract.events import Account, DeadLetter, Direction, Provider, Source, Status, TransferEvent, build_event
from bridge.delivery.assemble import build_pipeline
from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import DedupSettings, TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from tests.security.material import Material

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RECEIVED = "2026-11-22T10:00:00.000Z"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def secure_settings(broker: LocalKafka, material: Material, mechanism: str, *, password: str | None = None) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.sasl_ssl_bootstrap,
        client_id=f"sec-{mechanism.lower()}",
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="bridge",
        sasl_password=SecretStr(password if password is not None else material.users["bridge"]),
        ssl_cafile=material.ca_file,
        linger_ms=2,
        request_timeout_ms=5000,
    )


def fresh_topics() -> TopicSettings:
    suffix = uuid.uuid4().hex[:10]
    return TopicSettings(
        deposit=f"sec.{suffix}.deposit.v1",
        withdrawal=f"sec.{suffix}.withdrawal.v1",
        dead_letter=f"sec.{suffix}.dlq.v1",
        partitions=1,
    )


def deposit(transfer_id: str, status: Status = Status.PENDING) -> TransferEvent:
    return build_event(
        provider=Provider.RIPIO,
        direction=Direction.DEPOSIT,
        transfer_id=transfer_id,
        status=status,
        provider_status=status.value,
        amount="0.00000001",
        asset="BTC",
        occurred_at="2026-11-22T09:59:59.000Z",
        received_at=RECEIVED,
        source=Source(channel="deposit"),
        account=Account(id="user-1"),
    )


async def read_back(settings: KafkaSettings, topic: str, expect: int) -> list[ConsumedRecord]:
    options: dict[str, Any] = kafka_client_options(settings)
    bootstrap = options.pop("bootstrap_servers")
    return await read_topic(bootstrap, topic, expect=expect, timeout=20, **options)


async def embedded_pipeline(settings: KafkaSettings, topics: TopicSettings, tmp_path: Path) -> Pipeline:
    pipeline = Pipeline(Publisher(settings, topics), DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3")))
    await pipeline.start()
    return pipeline


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_events_and_dead_letters_travel_over_sasl_ssl(
    mechanism: str, secure_broker: LocalKafka, tls_material: Material, tmp_path: Path
) -> None:
    settings, topics = secure_settings(secure_broker, tls_material, mechanism), fresh_topics()
    pipeline = await embedded_pipeline(settings, topics, tmp_path)
    try:
        events = [deposit(f"dep-{n}") for n in range(3)] + [deposit("dep-0", Status.COMPLETED)]
        letter = DeadLetter(Provider.RIPIO, "deposit", "not JSON", b"\xff garbage", RECEIVED)
        outcomes = await pipeline.submit_all([*events, letter])
    finally:
        await pipeline.close(timeout=10)
    assert outcomes == [Outcome.PUBLISHED] * 4 + [Outcome.DEAD_LETTERED]
    records = await read_back(settings, topics.deposit, expect=4)
    assert sorted(json.loads(r.value)["event_id"] for r in records) == sorted(e.event_id for e in events)
    [dead] = await read_back(settings, topics.dead_letter, expect=1)
    assert dead.value == b"\xff garbage" and dead.headers["dlq_reason"] == b"not JSON"


async def test_exactly_once_mode_commits_its_transactions_over_scram(
    secure_broker: LocalKafka, tls_material: Material
) -> None:
    settings, topics = secure_settings(secure_broker, tls_material, "SCRAM-SHA-512"), fresh_topics()
    dedup = DedupSettings(store="kafka", state_topic=f"{topics.deposit}.state", transactional_id=f"sec-{uuid.uuid4().hex[:8]}")
    pipeline = build_pipeline(settings, topics, dedup)
    await pipeline.start()
    try:
        events = [deposit("tx-1"), deposit("tx-2"), deposit("tx-1")]
        outcomes = await pipeline.submit_all(events)
    finally:
        await pipeline.close(timeout=10)
    assert outcomes == [Outcome.PUBLISHED, Outcome.PUBLISHED, Outcome.DUPLICATE]
    records = await read_back(settings, topics.deposit, expect=2)
    assert sorted(json.loads(r.value)["transfer_id"] for r in records) == ["tx-1", "tx-2"]


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_a_wrong_password_appears_in_no_error_and_no_log_line_even_at_debug(
    mechanism: str, secure_broker: LocalKafka, tls_material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    """A SASL/PLAIN authenticate request carries the password in clear, and aiokafka logs every
    request at DEBUG: turning DEBUG on to chase a connection problem must not leak it."""
    wrong = "Wr0ng-" + uuid.uuid4().hex
    publisher = Publisher(secure_settings(secure_broker, tls_material, mechanism, password=wrong), fresh_topics())
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as failure:
        await publisher.start(timeout=2)
    assert wrong not in f"{failure.value!s} {failure.value!r}"
    assert wrong not in caplog.text
    assert "SaslAuthenticationFailed" in caplog.text  # the attempt was made and logged, minus the secret


async def test_a_wrong_password_fails_fast_with_an_error_naming_authentication_and_the_user(
    secure_broker: LocalKafka, tls_material: Material
) -> None:
    """Not "Kafka not reachable" after the whole start timeout: the broker answered and said no.
    Retrying does not fix credentials, so the operator should read what to fix, at once."""
    wrong = "Wr0ng-" + uuid.uuid4().hex
    publisher = Publisher(secure_settings(secure_broker, tls_material, "SCRAM-SHA-512", password=wrong), fresh_topics())
    started = time.monotonic()
    with pytest.raises(Exception) as failure:
        await publisher.start(timeout=12)
    message = str(failure.value)
    assert "authentication" in message.lower() and "'bridge'" in message and "SCRAM-SHA-512" in message, message
    assert wrong not in message
    assert time.monotonic() - started < 6


async def test_an_unknown_user_is_refused(secure_broker: LocalKafka, tls_material: Material) -> None:
    settings = secure_settings(secure_broker, tls_material, "SCRAM-SHA-256").model_copy(update={"sasl_username": "nobody"})
    with pytest.raises(ConnectionError):  # Publisher.start: refused, or unreachable within the timeout
        await Publisher(settings, fresh_topics()).start(timeout=2)


async def test_a_broker_certificate_from_an_untrusted_ca_is_refused(
    secure_broker: LocalKafka, tls_material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    """Verification is on by default: without ``ssl_cafile`` only the system CAs are trusted."""
    settings = secure_settings(secure_broker, tls_material, "SCRAM-SHA-256").model_copy(update={"ssl_cafile": None})
    caplog.set_level(logging.ERROR)
    with pytest.raises(ConnectionError):  # Publisher.start: refused, or unreachable within the timeout
        await Publisher(settings, fresh_topics()).start(timeout=2)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_plaintext_to_the_tls_listener_never_gets_through(secure_broker: LocalKafka) -> None:
    settings = KafkaSettings(bootstrap_servers=secure_broker.sasl_ssl_bootstrap, request_timeout_ms=2000)
    with pytest.raises(ConnectionError):  # Publisher.start: refused, or unreachable within the timeout
        await Publisher(settings, fresh_topics()).start(timeout=2)
