"""A command publishing beside the service (``dlq replay``, ``reconcile --repair``) in cluster mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.service.beside import ClusterModeRefused, side_pipeline
from tests.service.support import service_settings


def test_a_command_beside_a_cluster_refuses_to_build_its_pipeline_and_says_why(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, cluster={"enabled": True, "slots": 4}, dedup={"store": "kafka"})
    with pytest.raises(ClusterModeRefused, match="reconcile is not supported in cluster mode .*its slot's partition"):
        side_pipeline(settings, "reconcile")


def test_outside_cluster_mode_the_command_gets_a_gate_that_reads_the_services_state(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    pipeline = side_pipeline(settings, "reconcile")
    assert pipeline.gate.peer is not None
    assert str(getattr(pipeline.gate._store, "reserve_path", "")).endswith("dedup.sqlite3.reconcile.reserve")
    pipeline.gate._store.close()
