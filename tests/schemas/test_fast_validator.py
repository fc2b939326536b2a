"""The typed consumer validates with jsonschema-rs when it is installed, and says the same as the
jsonschema package it falls back to: valid records pass, broken ones fail at the same field."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from bridge.consumer import reader
from bridge.contract.jsonutil import dumps, loads_exact
from bridge.contract.schema import committed_versions, example_events

SCHEMA = committed_versions(1)[-1].schema
BROKEN: list[dict[str, Any]] = [{"amount": 0.5}, {"status": "lost"}, {"tx_hash": ""}, {"confirmations": -1}, {"event_id": "x"}, {"extra": 1}]


def cases() -> list[dict[str, Any]]:
    examples = [body for _, body in example_events()]
    # amounts and raw numbers as the consumer reads them: exact decimals and big integers, never floats
    return [loads_exact(dumps(body)) for body in examples] + [{**examples[0], **change} for change in BROKEN]


def test_the_fast_validator_is_used_when_installed_and_agrees_with_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jsonschema_rs")
    fast = reader._validator(SCHEMA)
    fast_verdicts = [fast(body) for body in cases()]
    monkeypatch.setitem(sys.modules, "jsonschema_rs", None)  # as if not installed: the fallback
    python = reader._validator(SCHEMA)
    assert (fast.__qualname__, python.__qualname__) == ("_validator.<locals>.first_error", "_python_validator.<locals>.first_error")
    verdicts = list(zip(fast_verdicts, [python(body) for body in cases()], strict=True))
    assert sum(f is None for f, _ in verdicts) == len(example_events())
    for fast_problem, python_problem in verdicts:
        assert (fast_problem is None) == (python_problem is None)
        if fast_problem is not None and python_problem is not None:
            assert fast_problem.split(":")[0] == python_problem.split(":")[0], (fast_problem, python_problem)
