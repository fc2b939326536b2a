"""Configuration: one pydantic-settings tree, from a YAML/TOML file, secret files and ``BRIDGE_…`` variables.

Where values come from, highest priority first:

1. ``BRIDGE_…`` environment variables; nested sections use ``__``
   (``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``). A list item is addressed by index or, for items with a
   ``name``, by that name (``BRIDGE_OKX__ACCOUNTS__MAIN__API_KEY``). List and section values may
   be given as JSON.
2. Secret files: every file in ``secrets_dir`` (``--secrets-dir``, ``BRIDGE_SECRETS_DIR`` or
   ``secrets_dir`` in the file; a mounted Kubernetes Secret) is one setting, named like the
   variable without its prefix (``okx__accounts__main__api_key``); a trailing newline is dropped.
3. The config file (``--config`` or ``BRIDGE_CONFIG``): ``.yaml``/``.yml``/``.json`` or ``.toml``.

Any setting ``x`` may instead be given as ``x_file`` (in the file, or ``BRIDGE_…_FILE``): the value
is read from that path. An unknown setting is an error, not a silent no-op: a typo must not leave a
default in place. Secrets are ``SecretStr`` so they print as ``**********`` everywhere, including
errors and reprs; ``ConfigError`` names fields and where they came from, never values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from bridge.delivery.settings import DedupSettings, PipelineSettings, TopicSettings
from bridge.ingest.settings import WebhookSettings
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings
from bridge.observability.logs import LogSettings
from bridge.service.cluster.settings import ClusterSettings
from bridge.service.walk import ConfigError, Loc, assign, dotted, read_value, resolve_file_refs

__all__ = [
    "KafkaSettings",
    "TopicSettings",
    "DedupSettings",
    "PipelineSettings",
    "SchemaRegistrySettings",
    "ServerSettings",
    "LogSettings",
    "SupervisorSettings",
    "StartupSettings",
    "ShutdownSettings",
    "StuckSettings",
    "ReloadSettings",
    "ClusterSettings",
    "BridgeSettings",
    "ConfigError",
    "load_settings",
    "secret_values",
    "RESERVED_ENV",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    """The HTTP side: webhook routes on ``port``; ``/healthz``, ``/readyz``, ``/metrics`` on ``admin_port``."""

    host: str = Field(default="127.0.0.1", description="bind address; 0.0.0.0 only inside a container")
    port: int = Field(default=8080, ge=0, le=65535, description="webhook routes (0 = any free port)")
    admin_port: int | None = Field(
        default=9090, ge=0, le=65535, description="health and metrics; None = served on `port` too"
    )
    access_log: bool = Field(default=False, description="one log line per HTTP request")
    request_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a connection must send each request's head within this after it opened or after the previous "
        "answer, else it is closed; idle keep-alive connections close after it too (keep a proxy's upstream idle "
        "timeout below it)",
    )
    request_body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="a request's body must arrive within this after its head, else 408 and close"
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description="open connections per listener (webhooks, admin); past it a new connection gets 503 and is closed",
    )


class SupervisorSettings(_Section):
    """How the shell keeps every source running on its own, and when a source counts as ready."""

    restart_initial_seconds: float = Field(default=1.0, gt=0, description="first restart delay of a crashed source")
    restart_max_seconds: float = Field(default=60.0, gt=0, description="restart delay ceiling")
    min_uptime_seconds: float = Field(default=30.0, ge=0, description="the restart delay resets after a run this long")
    config_error_retry_seconds: float = Field(
        default=60.0, gt=0, description="restart pace of a source that raised ConfigurationError"
    )
    readiness_grace_seconds: float = Field(
        default=60.0, ge=0, description="a source not yet connected counts as ready this long after start"
    )
    stall_restart_seconds: float = Field(
        default=600.0, ge=0, description="restart a source disconnected this long without a reported error (0 = never)"
    )
    cancel_timeout_seconds: float = Field(default=5.0, gt=0, description="wait this long for a cancelled source to end")
    sources_gate_readiness: bool = Field(
        default=True, description="/readyz fails while an enabled source is down past its grace (else: Kafka only)"
    )


class StartupSettings(_Section):
    kafka_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Kafka must answer within this at start, else exit 3"
    )


class ShutdownSettings(_Section):
    deadline_seconds: float = Field(
        default=25.0,
        gt=0,
        description="SIGTERM to exit: stop intake, drain, flush, persist; keep below the pod's "
        "terminationGracePeriodSeconds",
    )


class StuckSettings(_Section):
    """When an open (non-final) transfer counts as stuck (``bridge_stuck_transfers``); live-reloadable."""

    withdrawal_hours: float = Field(default=2.0, gt=0, description="a withdrawal open longer than this is stuck")
    deposit_hours: float = Field(default=6.0, gt=0, description="a deposit open longer than this is stuck")
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="per provider and direction, in hours: {'binance.withdrawal': 1, 'okx.deposit': 12}",
    )

    @model_validator(mode="after")
    def _override_names(self) -> StuckSettings:
        from bridge.contract.events import Direction, Provider

        known = {f"{p.value}.{d.value}" for p in Provider for d in Direction}
        wrong = sorted(name for name in self.overrides if name not in known)
        if wrong:
            raise ValueError(f"stuck.overrides: unknown {', '.join(wrong)} (use '<provider>.<deposit|withdrawal>')")
        if any(hours <= 0 for hours in self.overrides.values()):
            raise ValueError("stuck.overrides: hours must be positive")
        return self

    def threshold_seconds(self, provider: str, direction: str) -> float:
        hours = self.overrides.get(f"{provider}.{direction}")
        if hours is None:
            hours = self.withdrawal_hours if direction == "withdrawal" else self.deposit_hours
        return hours * 3600.0


class ReloadSettings(_Section):
    """Live reload (SIGHUP always works): also when the config file or secrets directory changes."""

    watch_seconds: float = Field(
        default=5.0, ge=0, description="check the config file and secrets_dir for changes this often (0 = SIGHUP only)"
    )


class BridgeSettings(BaseSettings):
    """Every section of the core; ``bridge.service.app.ServiceSettings`` adds one section per provider."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    dedup: DedupSettings = DedupSettings()
    pipeline: PipelineSettings = PipelineSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    startup: StartupSettings = StartupSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    stuck: StuckSettings = StuckSettings()
    reload: ReloadSettings = ReloadSettings()
    cluster: ClusterSettings = ClusterSettings()
    secrets_dir: Path | None = Field(
        default=None, description="directory of secret files (a mounted Kubernetes Secret), one setting per file"
    )

    @model_validator(mode="after")
    def _cluster_needs_exactly_once(self) -> BridgeSettings:
        """Replicas hand slots over; only the transactional store fences the previous owner."""
        if self.cluster.enabled and self.dedup.store != "kafka":
            raise ValueError(f"cluster: cluster mode requires dedup.store: kafka (exactly-once), not {self.dedup.store!r}")
        return self

    @model_validator(mode="after")
    def _webhook_bodies_fit_kafka_records(self) -> BridgeSettings:
        """Every body an enabled webhook accepts must fit one Kafka record whole: otherwise a delivery
        could be acknowledged while Kafka refuses it (and its dead letter)."""
        problems = [
            problem
            for name in type(self).model_fields
            if isinstance(section := getattr(self, name), WebhookSettings)
            and section.enabled
            and (problem := section.record_limit_problem(self.kafka.max_request_size, name))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, LayeredSource(settings_cls, _LOAD.get() or _Load()))


# -- loading ------------------------------------------------------------------------------------

PREFIX = "BRIDGE_"
RESERVED_ENV = frozenset({"BRIDGE_CONFIG", "BRIDGE_SECRETS_DIR"})
"""Variables that steer loading itself rather than naming a setting."""



@dataclass
class _Load:
    """One loading pass: its inputs, and where each value came from (for error messages)."""

    config_file: Path | None = None
    environ: Mapping[str, str] | None = None
    secrets_dir: Path | None = None
    origins: dict[Loc, str] = field(default_factory=dict)

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ


_LOAD: ContextVar[_Load | None] = ContextVar("bridge_settings_load", default=None)
S = TypeVar("S", bound=BridgeSettings)


def load_settings(
    cls: type[S] = BridgeSettings,  # type: ignore[assignment]
    *,
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path | str | None = None,
) -> S:
    """Read and validate the whole configuration; ``ConfigError`` says what is wrong and where."""
    load = _Load(
        config_file=Path(config_file) if config_file else None,
        environ=environ,
        secrets_dir=Path(secrets_dir) if secrets_dir else None,
    )
    token = _LOAD.set(load)
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, load.origins)) from None
    finally:
        _LOAD.reset(token)


class LayeredSource(PydanticBaseSettingsSource):
    """Config file, then secret files, then ``BRIDGE_…`` variables, merged path by path.

    One source rather than three so that a variable or secret file can address an item of a
    list the config file defined (pydantic-settings merges sources dict by dict, not into lists).
    """

    def __init__(self, settings_cls: type[BaseSettings], load: _Load):
        super().__init__(settings_cls)
        self.load = load

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        model: type[BaseModel] = self.settings_cls
        env = self.load.env
        data = self._file_data(env)
        origins = self.load.origins
        resolve_file_refs(data, model, (), origins)
        secrets_dir = self.load.secrets_dir or _path_or_none(env.get("BRIDGE_SECRETS_DIR")) or _path_or_none(data.get("secrets_dir"))
        if secrets_dir is not None:
            data["secrets_dir"] = str(secrets_dir)
            for name, value in _secret_files(secrets_dir):
                assign(data, model, name.split("__"), value, f"secret file {secrets_dir / name}", origins)
        for name in sorted(env):
            if not name.startswith(PREFIX) or name in RESERVED_ENV:
                continue
            path = name[len(PREFIX) :].split("__")
            if not all(path):
                raise ConfigError(f"invalid configuration: {name}: empty part in the name (use one `__` between levels)")
            assign(data, model, path, env[name], f"env {name}", origins)
        return data

    def _file_data(self, env: Mapping[str, str]) -> dict[str, Any]:
        path = self.load.config_file or _path_or_none(env.get("BRIDGE_CONFIG"))
        if path is None:
            return {}
        if not path.is_file():
            raise ConfigError(f"invalid configuration: config file {path} not found (from --config or BRIDGE_CONFIG)")
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                data = TomlConfigSettingsSource(self.settings_cls, toml_file=path)()
            elif suffix in (".yaml", ".yml", ".json"):
                data = YamlConfigSettingsSource(self.settings_cls, yaml_file=path)()
            else:
                raise ConfigError(f"invalid configuration: config file {path}: use .yaml, .yml, .json or .toml")
        except ConfigError:
            raise
        except Exception as exc:  # YAML/TOML syntax: the parser's message points at line and column
            raise ConfigError(f"invalid configuration: config file {path} is not valid {suffix[1:].upper()}: {_first_line(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"invalid configuration: config file {path} must hold a mapping of sections")
        for key in data:
            self.load.origins[(key,)] = str(path)
        return dict(data)


def _path_or_none(value: Any) -> Path | None:
    return Path(value) if value else None


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _secret_files(directory: Path) -> Iterator[tuple[str, str]]:
    """(name, content) of each file; dot-entries (a mounted Secret's ``..data`` links) are skipped."""
    if not directory.is_dir():
        raise ConfigError(f"invalid configuration: secrets_dir {directory} is not a directory")
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        yield entry.name.lower(), read_value(entry, f"secret file {entry}")


# -- errors and secrets -------------------------------------------------------------------------


def _origin_of(loc: Loc, origins: Mapping[Loc, str]) -> str | None:
    """Where the value at ``loc`` came from: its own origin or its nearest ancestor's, and — for a
    check across a section's fields — every source that set a part of it (a variable that switched
    SASL on is as much the culprit as the file that opened the ``kafka`` section)."""
    if not loc:
        return None
    found: list[str] = []
    for end in range(len(loc), 0, -1):
        origin = origins.get(loc[:end])
        if origin is not None:
            found.append(origin)
            break
    found.extend(origin for where, origin in origins.items() if len(where) > len(loc) and where[: len(loc)] == loc)
    return "; ".join(dict.fromkeys(found)) or None


def _describe(exc: ValidationError, origins: Mapping[Loc, str]) -> str:
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc: Loc = tuple(error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] == "missing":
            message = "required, but not set"
        message = message.removeprefix("Value error, ")
        origin = _origin_of(loc, origins)
        where = f"{dotted(loc)}: " if loc else ""  # a cross-field check names its fields itself
        problems.append(f"{where}{message}" + (f" [{origin}]" if origin else ""))
    if len(problems) == 1:
        return f"invalid configuration: {problems[0]}"
    return f"invalid configuration ({len(problems)} problems):\n" + "\n".join(f"  - {p}" for p in problems)


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret's plain value, for the log redaction filter; nothing else may read them."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(settings)
    return [value for value in found if value]
