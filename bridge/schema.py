"""The JSON Schema of the contract, generated from the pydantic model (the model is the source)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.events import SCHEMA_MAJOR, TransferEvent

__all__ = ["json_schema", "schema_text", "SCHEMA_DIR", "schema_path"]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def json_schema() -> dict[str, Any]:
    schema = TransferEvent.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path(major: int = SCHEMA_MAJOR) -> Path:
    return SCHEMA_DIR / f"transfer-event.v{major}.schema.json"
