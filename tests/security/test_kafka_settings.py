"""TLS and SASL as configuration: what ``KafkaSettings`` accepts, refuses, and hands to aiokafka."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr, ValidationError

from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings
from tests.security.material import make_ca

PASSWORD = "pa55-w0rd-never-shown"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def sasl(mechanism: str = "SCRAM-SHA-512", **overrides: object) -> KafkaSettings:
    values: dict[str, object] = {
        "bootstrap_servers": "kafka-1.example:9093,kafka-2.example:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_username": "bridge",
        "sasl_password": PASSWORD,
    }
    values.update(overrides)
    return KafkaSettings.model_validate(values)


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_client_options_carry_the_mechanism_and_credentials_aiokafka_expects(mechanism: str) -> None:
    options = kafka_client_options(sasl(mechanism))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "bridge" and options["sasl_plain_password"] == PASSWORD
    producer = AIOKafkaProducer(**options)  # aiokafka validates protocol, mechanism and context here
    assert producer.client._sasl_mechanism == mechanism


def test_tls_verifies_the_broker_certificate_and_host_name_by_default() -> None:
    context = kafka_client_options(KafkaSettings(security_protocol="SSL"))["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_a_configured_ca_file_is_what_the_client_trusts(tmp_path: Path) -> None:
    ca, _ = make_ca(tmp_path, name="settings test CA")
    context = kafka_client_options(sasl(ssl_cafile=ca))["ssl_context"]
    subjects = [dict(item[0] for item in cert["subject"]) for cert in context.get_ca_certs()]
    assert {"commonName": "settings test CA"} in subjects
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("missing", ["sasl_username", "sasl_password"])
def test_sasl_without_a_user_or_password_is_a_configuration_error(mechanism: str, missing: str) -> None:
    """Without this check SCRAM failed only at connect time, with an AttributeError inside aiokafka."""
    with pytest.raises(ValidationError, match="needs sasl_username and sasl_password"):
        sasl(mechanism, **{missing: None})


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_credentials_next_to_a_non_sasl_protocol_are_refused_not_silently_unused(protocol: str) -> None:
    with pytest.raises(ValidationError, match="use SASL_SSL"):
        sasl(security_protocol=protocol)


def test_an_unknown_mechanism_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(ValidationError) as failure:
        sasl("SCRAM-SHA-1")
    assert "sasl_mechanism" in str(failure.value)
    assert PASSWORD not in str(failure.value) and PASSWORD not in repr(failure.value)


def test_a_settings_error_never_shows_the_password() -> None:
    with pytest.raises(ValidationError) as failure:
        sasl(security_protocol="PLAINTEXT")
    assert PASSWORD not in str(failure.value) and PASSWORD not in repr(failure.value)


def test_the_password_never_appears_in_repr_str_or_json() -> None:
    settings = sasl()
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert PASSWORD not in text
    assert isinstance(settings.sasl_password, SecretStr)
