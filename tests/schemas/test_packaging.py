"""The contract ships with the package: a wheel installs every committed schema file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bridge.contract.schema import SCHEMA_DIR

REPO = Path(__file__).resolve().parents[2]


def test_every_committed_schema_file_is_installed_by_the_wheel() -> None:
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    installed = {path for patterns in data_files.values() for pattern in patterns for path in REPO.glob(pattern)}
    committed = {path for path in (REPO / "schemas").rglob("*") if path.is_file()}
    assert committed - installed == set(), "add these to [tool.setuptools.data-files] in pyproject.toml"


def test_a_checkout_reads_the_schemas_of_the_repository() -> None:
    assert SCHEMA_DIR == REPO / "schemas"
