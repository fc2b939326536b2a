"""The contract's schema files, generated from the pydantic model (the model is the source).

Layout under ``schemas/``:

* ``transfer-event.v<major>.schema.json`` – JSON Schema of the current version of a major;
* ``transfer-event.v<major>.avsc`` – the same record as an Avro schema;
* ``versions/transfer-event.v<major>.<minor>.schema.json`` – every published version, frozen:
  these are what ``schemas register`` puts into a registry, oldest first;
* ``examples/v<major>/*.json`` – example events, each carrying its ``schema_version``; every
  later version must still accept them (BACKWARD_TRANSITIVE, checked by the test suite).

The JSON Schema dialect is draft-07 with ``definitions``: Apicurio Registry 2.x answers every
compatibility check on a draft 2020-12 schema with HTTP 500 ("could not determine version"),
and draft-07 is the dialect every registry and client library understands. The keywords we use
mean the same in both drafts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.contract.events import SCHEMA_MAJOR, SCHEMA_VERSION, TransferEvent
from bridge.contract.jsonutil import loads_exact

__all__ = [
    "SCHEMA_DIR",
    "JSON_SCHEMA_DIALECT",
    "AVRO_NAMESPACE",
    "RECORD_NAME",
    "SchemaVersion",
    "PublishedVersionChanged",
    "json_schema",
    "schema_text",
    "schema_path",
    "version_path",
    "avro_schema",
    "avro_text",
    "avro_path",
    "committed_versions",
    "current_version",
    "example_events",
    "expected_files",
    "export",
    "version_key",
]

def _schema_dir() -> Path:
    """The repository's ``schemas/`` in a checkout (or editable install), else the copy a wheel
    installs under ``<prefix>/share/transfer-bridge/schemas``; ``BRIDGE_SCHEMA_DIR`` overrides both."""
    override = os.environ.get("BRIDGE_SCHEMA_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "transfer-bridge" / "schemas"


SCHEMA_DIR = _schema_dir()
JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"
AVRO_NAMESPACE = "dev.transfer_bridge.v{major}"
RECORD_NAME = "TransferEvent"
_VERSION_FILE = re.compile(r"^transfer-event\.v(\d+)\.(\d+)\.schema\.json$")


class PublishedVersionChanged(ValueError):
    """The model no longer matches a version that was already published (frozen)."""


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One published contract version as committed under ``schemas/versions/``."""

    major: int
    minor: int
    path: Path

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = json.loads(self.text)  # a committed JSON Schema file: always an object
        return schema


def version_key(version: str) -> tuple[int, int]:
    """``"1.10"`` → ``(1, 10)``, so versions sort numerically."""
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


# -- JSON Schema ----------------------------------------------------------------------------------


def json_schema(model: type[BaseModel] = TransferEvent) -> dict[str, Any]:
    """The model's JSON Schema, draft-07 (see module docstring for why not 2020-12)."""
    schema = model.model_json_schema(mode="serialization", ref_template="#/definitions/{model}")
    definitions = schema.pop("$defs", None)
    if definitions is not None:
        schema["definitions"] = definitions
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def schema_text(model: type[BaseModel] = TransferEvent) -> str:
    return json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n"


def schema_path(major: int = SCHEMA_MAJOR, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"transfer-event.v{major}.schema.json"


def version_path(version: str = SCHEMA_VERSION, directory: Path = SCHEMA_DIR) -> Path:
    major, minor = version_key(version)
    return directory / "versions" / f"transfer-event.v{major}.{minor}.schema.json"


def committed_versions(major: int | None = None, directory: Path = SCHEMA_DIR) -> list[SchemaVersion]:
    """Every published version (of one major, or all), oldest first."""
    found: list[SchemaVersion] = []
    for path in (directory / "versions").glob("transfer-event.v*.schema.json"):
        match = _VERSION_FILE.match(path.name)
        if match is None:
            continue
        version = SchemaVersion(int(match.group(1)), int(match.group(2)), path)
        if major is None or version.major == major:
            found.append(version)
    return sorted(found, key=lambda v: (v.major, v.minor))


def current_version(directory: Path = SCHEMA_DIR) -> SchemaVersion:
    """The version the model produces today, as committed."""
    major, minor = version_key(SCHEMA_VERSION)
    return SchemaVersion(major, minor, version_path(SCHEMA_VERSION, directory))


def example_events(major: int = SCHEMA_MAJOR, directory: Path = SCHEMA_DIR) -> list[tuple[Path, dict[str, Any]]]:
    """The committed example events of one major, sorted by file name."""
    folder = directory / "examples" / f"v{major}"
    return [(path, loads_exact(path.read_bytes())) for path in sorted(folder.glob("*.json"))]


# -- Avro -------------------------------------------------------------------------------------------


def avro_schema() -> dict[str, Any]:
    """The same record as Avro, derived from the model's fields (names, order, nullability).

    Amounts and timestamps stay strings, exactly as in the JSON; ``raw`` (any JSON object) is
    carried as its JSON text, since Avro has no "any" type.
    """
    extra = TransferEvent.model_config.get("json_schema_extra")
    doc = extra.get("description") if isinstance(extra, dict) else None
    return _avro_record(TransferEvent, set(), doc=doc if isinstance(doc, str) else None)


def avro_text() -> str:
    return json.dumps(avro_schema(), indent=2) + "\n"


def avro_path(major: int = SCHEMA_MAJOR, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"transfer-event.v{major}.avsc"


def _avro_record(model: type[BaseModel], named: set[str], *, doc: str | None = None) -> dict[str, Any]:
    named.add(model.__name__)
    record: dict[str, Any] = {"type": "record", "name": model.__name__}
    if model is TransferEvent:
        record["namespace"] = AVRO_NAMESPACE.format(major=SCHEMA_MAJOR)
    description = doc or (model.__doc__ or "").strip() or None
    if description:
        record["doc"] = description
    fields: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        avro_type, nullable = _avro_type(info.annotation, named, field=name)
        field: dict[str, Any] = {"name": name, "type": ["null", avro_type] if nullable else avro_type}
        if _is_any_json_object(info.annotation):
            field["doc"] = "the JSON object as JSON text (Avro has no 'any JSON' type)"
        if not info.is_required():
            default = info.default
            field["default"] = default.value if isinstance(default, Enum) else default
        fields.append(field)
    record["fields"] = fields
    return record


def _is_any_json_object(annotation: Any) -> bool:
    members = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return any(typing.get_origin(m) is dict and typing.get_args(m)[1] is Any for m in members)


def _avro_type(annotation: Any, named: set[str], *, field: str) -> tuple[Any, bool]:
    """(Avro type, nullable) for one field annotation; unknown shapes are an error, not a guess."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"{field}: unions other than X | None have no Avro mapping")
        inner, _ = _avro_type(members[0], named, field=field)
        return inner, True
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if key_type is not str:
            raise TypeError(f"{field}: Avro maps need string keys")
        if value_type is Any:
            return "string", False  # arbitrary JSON object, as JSON text
        inner, nullable = _avro_type(value_type, named, field=field)
        return {"type": "map", "values": ["null", inner] if nullable else inner}, False
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return (annotation.__name__ if annotation.__name__ in named else _avro_record(annotation, named)), False
        if issubclass(annotation, Enum):
            if annotation.__name__ in named:
                return annotation.__name__, False
            named.add(annotation.__name__)
            enum: dict[str, Any] = {"type": "enum", "name": annotation.__name__, "symbols": [m.value for m in annotation]}
            if "unknown" in enum["symbols"]:
                enum["default"] = "unknown"  # a reader meeting a newer symbol falls back to it
            return enum, False
        if annotation is bool:
            return "boolean", False
        if annotation is int:
            return "long", False
        if annotation is str:
            return "string", False
    raise TypeError(f"{field}: no Avro mapping for {annotation!r}; extend bridge.contract.schema._avro_type")


# -- export -------------------------------------------------------------------------------------------


def expected_files(directory: Path = SCHEMA_DIR) -> dict[Path, str]:
    """What ``export`` writes: current JSON Schema, Avro schema, and the frozen version file."""
    text = schema_text()
    return {
        schema_path(SCHEMA_MAJOR, directory): text,
        avro_path(SCHEMA_MAJOR, directory): avro_text(),
        version_path(SCHEMA_VERSION, directory): text,
    }


def export(directory: Path = SCHEMA_DIR, *, write: bool = True) -> list[Path]:
    """Write the schema files from the model; returns the files that changed (or would change).

    A published version is immutable: if ``versions/`` already holds this ``SCHEMA_VERSION`` with
    different content, nothing is written and ``PublishedVersionChanged`` says what to do.
    """
    files = expected_files(directory)
    frozen = version_path(SCHEMA_VERSION, directory)
    if frozen.exists() and frozen.read_text() != files[frozen]:
        raise PublishedVersionChanged(
            f"contract {SCHEMA_VERSION} is published (versions/{frozen.name}) "
            f"and the model no longer produces it. Published versions never change: add optional fields "
            f"and bump SCHEMA_VERSION to {SCHEMA_MAJOR}.{version_key(SCHEMA_VERSION)[1] + 1}, or start "
            f"v{SCHEMA_MAJOR + 1} on new topics (see schemas/README.md)."
        )
    changed = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if write:
        for path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
    return changed
