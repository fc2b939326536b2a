"""Finding 8b (Reliability): an empty ``BRIDGE_KAFKA__SASL_PASSWORD=`` was blamed on the config file.

A problem must be reported against where its value came from: the empty variable is named (the
password itself never is), and a check across a section's fields names every source that set
part of it, not only the file that opened the section.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.service.settings import ConfigError, load_settings

SASL_FILE = "kafka:\n  bootstrap_servers: k1:9093\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: bridge\n"


def problem(tmp_path: Path, document: str, environ: dict[str, str], secrets: dict[str, str] | None = None) -> str:
    config = tmp_path / "bridge.yaml"
    config.write_text(document)
    secrets_dir = None
    if secrets is not None:
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        for name, value in secrets.items():
            (secrets_dir / name).write_text(value)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, environ=environ, secrets_dir=secrets_dir)
    return str(caught.value)


def test_an_empty_sasl_password_variable_is_named(tmp_path: Path) -> None:
    message = problem(tmp_path, SASL_FILE, {"BRIDGE_KAFKA__SASL_PASSWORD": ""})
    assert "kafka.sasl_password" in message and "[env BRIDGE_KAFKA__SASL_PASSWORD]" in message, message
    assert str(tmp_path / "bridge.yaml") not in message, message


def test_an_empty_sasl_password_is_named_when_the_whole_section_comes_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "BRIDGE_KAFKA__SASL_USERNAME": "bridge",
        "BRIDGE_KAFKA__SASL_PASSWORD": "",
    }
    message = problem(tmp_path, "log:\n  level: INFO\n", environ)
    assert "kafka.sasl_password" in message and "[env BRIDGE_KAFKA__SASL_PASSWORD]" in message, message


def test_an_empty_sasl_password_file_is_named(tmp_path: Path) -> None:
    message = problem(tmp_path, SASL_FILE, {}, secrets={"kafka__sasl_password": "\n"})
    assert "kafka.sasl_password" in message and "kafka__sasl_password" in message, message


def test_a_check_across_the_section_names_the_variable_that_took_part(tmp_path: Path) -> None:
    """SASL switched on by a variable, credentials nowhere: the file alone is not the culprit."""
    message = problem(tmp_path, "kafka:\n  bootstrap_servers: k1:9093\n", {"BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"})
    assert "needs sasl_username and sasl_password" in message, message
    assert "env BRIDGE_KAFKA__SECURITY_PROTOCOL" in message, message
