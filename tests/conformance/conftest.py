"""The conformance suite runs over every registered provider that ships a harness
(``bridge_testkit.<name>.harness``).

``harness`` is parametrized by provider; a test marked ``@pytest.mark.requires("backfill", …)`` is
generated only for the harnesses with all those capabilities (nothing is skipped: a provider
without the capability simply has no such test). ``parser_entry`` is parametrized by every pure
parse entry point of every harnessed provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.conformance import CAPABILITIES, ProviderHarness, harness_for, harness_names
from tests.conformance.support import Bridge, Topics


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires(*capabilities): generate the test only for provider harnesses with all these capabilities"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_name" in metafunc.fixturenames:
        needed: set[str] = set()
        for marker in metafunc.definition.iter_markers("requires"):
            needed.update(marker.args)
        unknown = needed - CAPABILITIES
        if unknown:
            raise ValueError(f"{metafunc.definition.nodeid}: unknown capabilities {sorted(unknown)}")
        names = [name for name in harness_names() if needed <= harness_for(name).capabilities]
        metafunc.parametrize("harness_name", names)
    if "parser_entry" in metafunc.fixturenames:
        entries = [entry for name in harness_names() for entry in harness_for(name).parsers()]
        metafunc.parametrize("parser_entry", entries, ids=[entry.name for entry in entries])


@pytest.fixture
async def harness(harness_name: str) -> AsyncIterator[ProviderHarness]:
    async with harness_for(harness_name) as started:
        yield started


@pytest.fixture
def bridge(harness: ProviderHarness, tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings) -> Bridge:
    return Bridge(harness, tmp_path, kafka_settings, topics)


@pytest.fixture
async def kafka(kafka_bootstrap: str, topics: TopicSettings) -> AsyncIterator[Topics]:
    async with Topics(kafka_bootstrap, topics) as reader:
        yield reader
