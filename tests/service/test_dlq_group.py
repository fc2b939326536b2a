"""A replay's default consumer group: one per selection, the same in every process."""

from __future__ import annotations

import os
import subprocess
import sys

from bridge.service.dlq.cli import default_group
from bridge.service.dlq.records import Filter
from bridge.service.settings import BridgeSettings

PROGRAM = """
from bridge.service.dlq.cli import default_group
from bridge.service.dlq.records import Filter
from bridge.service.settings import BridgeSettings
print(default_group(BridgeSettings(), Filter(providers=frozenset({"okx", "ripio", "binance"}), channels=frozenset({"a", "b", "c"}))))
"""


def test_the_whole_topic_has_the_plain_group_and_each_narrowed_selection_its_own() -> None:
    settings = BridgeSettings()
    assert default_group(settings, Filter()) == "transfer-bridge-dlq-replay"
    okx, ripio = default_group(settings, Filter(providers=frozenset({"okx"}))), default_group(settings, Filter(providers=frozenset({"ripio"})))
    assert okx != ripio and okx.startswith("transfer-bridge-dlq-replay-")


def test_the_group_of_a_selection_does_not_depend_on_the_process_hash_seed() -> None:
    names = {
        subprocess.run([sys.executable, "-c", PROGRAM], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert len(names) == 1
