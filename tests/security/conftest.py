"""A broker of its own with a SASL_SSL listener, its CA and users made for this session only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_testkit.kafka_broker import LocalKafka
from tests.security.material import Material, make_material


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def secure_broker(tls_material: Material, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """PLAINTEXT for nobody here; SASL_SSL (PLAIN, SCRAM-SHA-256/512) on ``sasl_ssl_bootstrap``."""
    broker = LocalKafka(
        directory=Path(tmp_path_factory.mktemp("secure-kafka")),
        sasl_ssl_port=0,
        tls_dir=tls_material.directory,
        scram_users=tls_material.users_file,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()
