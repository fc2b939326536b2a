"""A dedup file that cannot be used is a configuration error: exit 2 and one clear line, no traceback.

Each case runs the real command line (``python -m bridge run`` with a config file) in a child
process. Kafka is never reached: the store is opened before the broker is dialled.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.support import service_document, write_yaml

ROOT = Path(__file__).resolve().parents[2]


def _read_only_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o555)
    return directory / "dedup.sqlite3"


def _read_only_file(tmp_path: Path) -> Path:
    path = tmp_path / "rofile" / "dedup.sqlite3"
    path.parent.mkdir()
    sqlite3.connect(path).close()
    path.chmod(0o444)
    return path


def _corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt" / "dedup.sqlite3"
    path.parent.mkdir()
    path.write_bytes(os.urandom(16384))
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "isadir" / "dedup.sqlite3"
    path.mkdir(parents=True)
    return path


CASES = {
    "read-only directory": (_read_only_dir, "cannot be written"),
    "read-only file": (_read_only_file, "cannot be written"),
    "corrupt file": (_corrupt_file, "not a SQLite database"),
    "directory at dedup.path": (_directory, "is a directory"),
}


def _unprivileged() -> list[str]:
    """As root, permissions do not bind: drop the capabilities that bypass them for the child."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only directory cannot be made to bind")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_dedup_file_exits_2_with_one_clear_line(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    path = make(tmp_path)
    document = service_document(tmp_path, startup={"kafka_timeout_seconds": 3})
    document["kafka"]["bootstrap_servers"] = "127.0.0.1:1"  # never dialled: the store fails first
    document["dedup"]["path"] = str(path)
    config = write_yaml(tmp_path / "bridge.yaml", document)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    done = subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "bridge", "--config", str(config), "run"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    errors = [e for e in lines if e["level"] in ("ERROR", "CRITICAL")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(errors) == 1, done.stderr[-3000:]
    [error] = errors
    assert "exception" not in error and "Traceback" not in done.stderr
    assert error["message"].startswith(f"invalid configuration: dedup.path {path}: "), error["message"]
    assert expected in error["message"], error["message"]
    assert "\n" not in error["message"]
    assert error.get("exit_code") == 2
