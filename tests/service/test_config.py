"""Configuration: layering, secret files, and one clear message naming the field on any mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.ingest.plugins import registered
from bridge.service.app import ServiceSettings
from bridge.service.cli import main
from bridge.service.settings import ConfigError, load_settings, secret_values
from tests.service.support import write_yaml

OKX_KEY = "okx-key-5f2a9c1e-0000"
OKX_SECRET = "OKXSECRET0123456789ABCDEF"
OKX_PASSPHRASE = "Pass-phrase!42"
WEBHOOK_SECRET = "whsec_rotating_new_9d8c7b"


def load(config: Path | None = None, *, env: dict[str, str] | None = None, secrets: Path | None = None) -> ServiceSettings:
    return load_settings(ServiceSettings, config_file=config, environ=env or {}, secrets_dir=secrets)


def okx_document() -> dict:
    return {"okx": {"enabled": True, "accounts": [{"name": "main", "uid": "447"}, {"name": "sub1"}]}}


def secret_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    for name, value in files.items():
        (directory / name).write_text(value + "\n")  # `kubectl create secret --from-file` keeps newlines
    (directory / "..data").mkdir()  # what a mounted Secret looks like: dot entries are skipped
    return directory


def test_environment_overrides_secret_files_which_override_the_file(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", {"kafka": {"bootstrap_servers": "file:9092", "client_id": "from-file"}, "topics": {"partitions": 3}})
    secrets = secret_dir(tmp_path, {"kafka__client_id": "from-secret-file", "topics__partitions": "4"})
    settings = load(config, env={"BRIDGE_TOPICS__PARTITIONS": "5"}, secrets=secrets)
    assert settings.kafka.bootstrap_servers == "file:9092"
    assert settings.kafka.client_id == "from-secret-file"
    assert settings.topics.partitions == 5


def test_toml_file_is_read_like_yaml(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_servers = "toml:9092"\n\n[server]\nport = 18080\nadmin_port = 19090\n')
    settings = load(config)
    assert (settings.kafka.bootstrap_servers, settings.server.port, settings.server.admin_port) == ("toml:9092", 18080, 19090)


def test_config_file_comes_from_bridge_config_when_no_option_is_given(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yml", {"log": {"level": "DEBUG"}})
    assert load(env={"BRIDGE_CONFIG": str(config)}).log.level == "DEBUG"


def test_account_credentials_come_from_secret_files_addressed_by_account_name(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", okx_document())
    secrets = secret_dir(
        tmp_path,
        {
            "okx__accounts__main__api_key": OKX_KEY,
            "okx__accounts__main__secret_key": OKX_SECRET,
            "okx__accounts__main__passphrase": OKX_PASSPHRASE,
            "okx__accounts__sub1__api_key": "sub-key-1",
            "okx__accounts__sub1__secret_key": "sub-secret-1",
            "okx__accounts__sub1__passphrase": "sub-pass-1",
        },
    )
    settings = load(config, secrets=secrets)
    main_account = settings.okx.accounts[0]
    assert main_account.uid == "447"  # the file's other fields are kept
    assert main_account.api_key.get_secret_value() == OKX_KEY  # trailing newline dropped
    assert settings.okx.accounts[1].passphrase.get_secret_value() == "sub-pass-1"


def test_any_setting_can_be_read_from_a_file_named_by_x_file(tmp_path: Path) -> None:
    (tmp_path / "webhook").write_text(f"old_secret_abc\n{WEBHOOK_SECRET}\n")
    (tmp_path / "passphrase").write_text(OKX_PASSPHRASE)
    document = okx_document()
    document["okx"]["accounts"] = [{"name": "main", "api_key": OKX_KEY, "secret_key": OKX_SECRET, "passphrase_file": str(tmp_path / "passphrase")}]
    document["openxswitch"] = {"enabled": True}
    config = write_yaml(tmp_path / "c.yaml", document)
    settings = load(config, env={"BRIDGE_OPENXSWITCH__SECRETS_FILE": str(tmp_path / "webhook")})
    assert settings.okx.accounts[0].passphrase.get_secret_value() == OKX_PASSPHRASE
    assert [s.get_secret_value() for s in settings.openxswitch.secrets] == ["old_secret_abc", WEBHOOK_SECRET]  # one per line
    assert set(secret_values(settings)) == {OKX_KEY, OKX_SECRET, OKX_PASSPHRASE, "old_secret_abc", WEBHOOK_SECRET}


def test_list_items_can_be_given_whole_as_json_in_the_environment() -> None:
    accounts = f'[{{"name":"main","api_key":"{OKX_KEY}","secret_key":"{OKX_SECRET}","passphrase":"{OKX_PASSPHRASE}"}}]'
    settings = load(env={"BRIDGE_OKX__ENABLED": "true", "BRIDGE_OKX__ACCOUNTS": accounts, "BRIDGE_OKX__ACCOUNTS__0__UID": "9"})
    assert settings.okx.accounts[0].uid == "9"


def test_unknown_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={"BRIDGE_KAFKA__BOOTSTRAP_SERVER": "x:1"})
    assert str(caught.value) == (
        "invalid configuration: kafka.bootstrap_server: unknown setting (did you mean 'bootstrap_servers'?) "
        "[env BRIDGE_KAFKA__BOOTSTRAP_SERVER]"
    )


def test_unknown_key_in_the_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", {"server": {"prot": 8080}})
    with pytest.raises(ConfigError, match=r"^invalid configuration: server\.prot: unknown setting \[" + str(config)):
        load(config)


def test_invalid_value_names_field_and_origin_but_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={"BRIDGE_SERVER__ADMIN_PORT": "90x90"})
    message = str(caught.value)
    assert message.startswith("invalid configuration: server.admin_port: ")
    assert message.endswith("[env BRIDGE_SERVER__ADMIN_PORT]")
    assert "90x90" not in message


def test_missing_credential_names_the_account_field(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", okx_document())
    secrets = secret_dir(tmp_path, {"okx__accounts__main__api_key": OKX_KEY, "okx__accounts__main__passphrase": OKX_PASSPHRASE})
    with pytest.raises(ConfigError) as caught:
        load(config, secrets=secrets)
    message = str(caught.value)
    assert "okx.accounts[0].secret_key: required, but not set" in message
    assert "okx.accounts[1].api_key: required, but not set" in message
    assert OKX_KEY not in message and OKX_PASSPHRASE not in message


def test_secret_file_for_an_account_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", okx_document())
    secrets = secret_dir(tmp_path, {"okx__accounts__mian__api_key": OKX_KEY})
    with pytest.raises(ConfigError, match=r"okx\.accounts: no item named 'mian' to set .*secret file .*okx__accounts__mian__api_key"):
        load(config, secrets=secrets)


@pytest.mark.parametrize("provider", ["okx", "ripio"])
def test_enabled_provider_without_accounts_is_refused(provider: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid configuration: {provider}\.accounts: {provider} is enabled but has no enabled account$"):
        load(env={f"BRIDGE_{provider.upper()}__ENABLED": "true"})


def test_enabled_webhook_without_a_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="openxswitch: openxswitch is enabled but no webhook secret is configured"):
        load(env={"BRIDGE_OPENXSWITCH__ENABLED": "1"})


def test_missing_config_file_and_missing_secrets_dir_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"config file {tmp_path / 'nope.yaml'} not found"):
        load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=f"secrets_dir {tmp_path / 'none'} is not a directory"):
        load(secrets=tmp_path / "none")


def test_malformed_yaml_points_at_the_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  bootstrap_servers: [a\nserver: {}\n")
    with pytest.raises(ConfigError, match=rf"config file {config} is not valid YAML: .*line \d+"):
        load(config)


# -- the command line ---------------------------------------------------------------------------


def test_check_config_prints_the_effective_configuration_with_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ripio = {"enabled": True, "accounts": [{"name": "ar"}]}
    config = write_yaml(tmp_path / "c.yaml", {**okx_document(), "ripio": ripio, "openxswitch": {"enabled": True}})
    secrets = secret_dir(
        tmp_path,
        {
            **{f"okx__accounts__{a}__{f}": v for a in ("main", "sub1") for f, v in (("api_key", OKX_KEY + a), ("secret_key", OKX_SECRET + a), ("passphrase", OKX_PASSPHRASE + a))},
            "ripio__accounts__ar__api_token": "ripio-token-77aa",
            "ripio__accounts__ar__api_secret": "ripio-secret-88bb",
            "openxswitch__secrets": WEBHOOK_SECRET,
        },
    )
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    assert main(["check-config", "--config", str(config), "--secrets-dir", str(secrets)]) == 0
    out, err = capsys.readouterr()
    shown = yaml.safe_load(out)
    assert shown["kafka"]["bootstrap_servers"] == "k1:9092,k2:9092"
    assert shown["okx"]["accounts"][0]["api_key"] == "**********"
    assert shown["openxswitch"]["secrets"] == ["**********"]
    assert shown["ripio"]["accounts"][0]["api_secret"] == "**********"
    for secret in (OKX_KEY, OKX_SECRET, OKX_PASSPHRASE, WEBHOOK_SECRET, "ripio-token-77aa", "ripio-secret-88bb"):
        assert secret not in out and secret not in err
    assert "environment: BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in err
    assert "sources: okx (2 accounts), ripio (1 account), openxswitch (/webhooks/openxswitch)" in err


def test_check_config_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", "kafka-pw-never-shown")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_USERNAME", "bridge")
    monkeypatch.setenv("BRIDGE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    assert main(["check-config", "--format", "json"]) == 0
    out, _ = capsys.readouterr()
    assert '"sasl_password": "**********"' in out and "kafka-pw-never-shown" not in out


def test_run_with_a_wrong_config_exits_2_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SHUTDOWN__DEADLINE_SECONDS", "-1")
    assert main(["run"]) == 2
    _, err = capsys.readouterr()
    assert err == (
        "transfer-bridge: invalid configuration: shutdown.deadline_seconds: Input should be greater than 0 "
        "[env BRIDGE_SHUTDOWN__DEADLINE_SECONDS]\n"
    )


def test_help_explains_commands_configuration_and_exit_codes() -> None:
    done = subprocess.run([sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for text in ("run", "check-config", "demo", "schemas", "BRIDGE_SECRETS_DIR", "--config", "exit codes:"):
        assert text in done.stdout
    for code in range(6):
        assert f"\n  {code}  " in done.stdout


def test_help_lists_every_registered_provider_from_the_registry() -> None:
    """No provider is named in the CLI's code: the help lists what is installed, and ``reconcile``
    names exactly the providers that declare a history API."""
    plugins = registered()
    assert {plugin.kind for plugin in plugins} == {"stream", "webhook", "poll"}
    done = subprocess.run([sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    listed = done.stdout.split("providers (configuration section, source kind, what it reads):\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[:2] for line in listed.splitlines()] == [[plugin.name, plugin.kind] for plugin in plugins]
    assert all(plugin.summary and plugin.summary in listed for plugin in plugins)
    done = subprocess.run([sys.executable, "-m", "bridge", "reconcile", "--help"], capture_output=True, text=True, timeout=60)
    named = " ".join(done.stdout.split()).split("with a history API (", 1)[1].split(")", 1)[0]
    assert named.split(", ") == [plugin.name for plugin in plugins if plugin.history is not None]
    assert any(plugin.history is None for plugin in plugins)  # openxswitch: webhooks only, not named


def test_usage_error_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "bridge", "launch"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'launch'" in done.stderr


def test_arguments_after_demo_belong_to_the_demo() -> None:
    done = subprocess.run([sys.executable, "-m", "bridge", "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: transfer-bridge demo")


def test_unknown_option_of_a_command_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "bridge", "check-config", "--bogus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
