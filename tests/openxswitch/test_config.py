"""OpenXSwitchConfig: secrets stay secret, addresses are networks, limits are bounded."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from bridge.sources.openxswitch.config import DEFAULT_PATH, OpenXSwitchConfig


def test_defaults_are_disabled_with_safe_limits() -> None:
    config = OpenXSwitchConfig()
    # 960 KiB: with the record overhead it fits kafka.max_request_size's default (1,000,000)
    assert (config.enabled, config.path, config.max_body_bytes) == (False, DEFAULT_PATH, 983_040)
    assert 0 < config.ack_timeout_seconds < 60
    assert config.allowed_ips == [] and config.secrets == []


def test_secrets_never_show_in_repr_dump_or_errors() -> None:
    config = OpenXSwitchConfig(enabled=True, secrets=["top-secret-value"])
    assert "top-secret-value" not in repr(config)
    assert "top-secret-value" not in config.model_dump_json()
    with pytest.raises(ValidationError) as caught:
        OpenXSwitchConfig(secrets=["top-secret-value"], max_body_bytes=-1)
    assert "top-secret-value" not in str(caught.value)


def test_a_single_secret_string_is_one_secret_even_with_commas() -> None:
    config = OpenXSwitchConfig(secrets="a,b")
    assert [s.get_secret_value() for s in config.secrets] == ["a,b"]


def test_enabled_without_a_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="no webhook secret"):
        OpenXSwitchConfig(enabled=True)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        OpenXSwitchConfig(secrets=["ok", ""])


def test_allowed_ips_accept_addresses_and_cidrs_as_list_or_text() -> None:
    config = OpenXSwitchConfig(allowed_ips="203.0.113.7, 10.0.0.0/8,2001:db8::/32")
    assert config.allowed_ips == [
        ipaddress.ip_network("203.0.113.7/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert OpenXSwitchConfig(trusted_proxies=["127.0.0.1"]).trusted_proxies == [ipaddress.ip_network("127.0.0.1/32")]


def test_a_malformed_cidr_is_refused() -> None:
    with pytest.raises(ValidationError):
        OpenXSwitchConfig(allowed_ips=["10.0.0.0/33"])


@pytest.mark.parametrize("timeout", [0, 60, 120])
def test_the_ack_timeout_stays_inside_the_providers_minute(timeout: float) -> None:
    with pytest.raises(ValidationError):
        OpenXSwitchConfig(ack_timeout_seconds=timeout)


@pytest.mark.parametrize("path", ["webhooks", "/a b", "/x?y"])
def test_the_path_must_be_an_absolute_plain_path(path: str) -> None:
    with pytest.raises(ValidationError):
        OpenXSwitchConfig(path=path)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError):
        OpenXSwitchConfig(secret="typo")  # type: ignore[call-arg]
