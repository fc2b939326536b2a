"""Cluster settings and the slot layout: what ``check-config`` refuses, where each source lands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.delivery.slots import slot_of
from bridge.service.app import ServiceSettings
from bridge.service.cluster.layout import describe_layout, slotted_names
from bridge.service.cluster.settings import ClusterSettings


def test_cluster_mode_is_refused_without_the_exactly_once_store() -> None:
    with pytest.raises(ValidationError, match="cluster mode requires dedup.store: kafka"):
        ServiceSettings(cluster={"enabled": True}, dedup={"store": "sqlite"})


def test_cluster_mode_with_the_kafka_store_is_accepted_and_single_process_stays_the_default() -> None:
    assert not ServiceSettings().cluster.enabled
    settings = ServiceSettings(cluster={"enabled": True, "slots": 4}, dedup={"store": "kafka"})
    assert settings.cluster.slots == 4


def test_heartbeat_must_fit_three_times_in_the_session_timeout() -> None:
    with pytest.raises(ValidationError, match="heartbeat_interval_ms"):
        ClusterSettings(session_timeout_ms=6000, heartbeat_interval_ms=2500)


def test_each_slot_has_its_own_stable_transactional_id() -> None:
    cluster = ClusterSettings(group_id="payments", slots=3)
    assert [cluster.transactional_id(n) for n in range(3)] == ["payments-slot-0", "payments-slot-1", "payments-slot-2"]


@given(names=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20, unique=True), extra=st.text(min_size=1))
def test_adding_an_account_never_moves_another_account_to_a_different_slot(names: list[str], extra: str) -> None:
    before = {name: slot_of(name, 8) for name in names}
    after = {name: slot_of(name, 8) for name in [*names, extra]}
    assert all(after[name] == slot for name, slot in before.items())


def test_slot_of_is_the_same_in_every_process_and_spreads_names() -> None:
    """Replicas on other hosts (another ``PYTHONHASHSEED``) must compute the same slots."""
    code = "from bridge.delivery.slots import slot_of; print([slot_of(f'okx:acct{n}', 4) for n in range(32)])"
    other = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == str([slot_of(f"okx:acct{n}", 4) for n in range(32)])
    assert slot_of("okx:main", 1) == 0
    spread = {slot_of(f"okx:acct{n}", 4) for n in range(64)}
    assert spread == {0, 1, 2, 3}


def test_check_config_summary_names_the_slot_of_every_account() -> None:
    settings = ServiceSettings(
        cluster={"enabled": True, "slots": 2, "group_id": "g1"},
        dedup={"store": "kafka"},
        okx={
            "enabled": True,
            "accounts": [
                {"name": "main", "api_key": "k", "secret_key": "s", "passphrase": "p"},
                {"name": "sub1", "api_key": "k", "secret_key": "s", "passphrase": "p"},
            ],
        },
    )
    assert slotted_names(settings) == {"okx:main": slot_of("okx:main", 2), "okx:sub1": slot_of("okx:sub1", 2)}
    lines = describe_layout(settings)
    assert "group g1, 2 slots, transactional ids g1-slot-0…1" in lines[0]
    assert f"okx:main → {slot_of('okx:main', 2)}" in lines[1]
