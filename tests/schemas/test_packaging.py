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


def test_the_service_wheel_holds_the_providers_and_the_contract_but_no_test_tooling(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("transfer_bridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert "bridge/ingest/stream.py" in modules and "bridge/sources/okx/plugin.py" in modules
    assert [m for m in modules if "testkit" in m or m.endswith(("simulator.py", "scenario.py", "demo.py", "harness.py"))] == []
    assert not any(name.startswith(("tests/", "testkit/")) for name in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[transfer_bridge.providers]" in entry_points and "okx = bridge.sources.okx.plugin:PLUGIN" in entry_points
    assert any(name.endswith("share/transfer-bridge/schemas/transfer-event.v1.schema.json") for name in names)
