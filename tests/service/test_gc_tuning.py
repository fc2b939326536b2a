"""The service's process collects young objects less often and freezes what it started with; an
application embedding ``BridgeApp`` (a test, a library user) keeps its own collector settings."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.service.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD, refreeze, tune_for_service
from tests.service.support import running, service_settings


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tuning_freezes_what_is_alive_and_raises_the_young_threshold(collector: None) -> None:
    gc.unfreeze()
    tune_for_service()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert gc.get_freeze_count() > 1_000  # modules, classes and models loaded so far


class _Node:
    cycle: _Node


def test_after_a_reload_what_was_frozen_at_start_and_is_garbage_now_is_collected(collector: None) -> None:
    gc.unfreeze()
    replaced = _Node()
    replaced.cycle = replaced  # a source's object graph holds cycles (tasks, bound methods)
    alive = weakref.ref(replaced)
    tune_for_service()
    del replaced
    gc.collect()
    assert alive() is not None  # frozen: no collection looks at it
    refreeze()
    assert alive() is None
    assert gc.get_freeze_count() > 1_000  # what is still alive is frozen again


def test_refreeze_leaves_an_untuned_process_alone(collector: None) -> None:
    gc.unfreeze()
    refreeze()
    assert gc.get_freeze_count() == 0


@pytest.mark.kafka
async def test_an_embedded_app_leaves_the_collector_as_it_found_it(
    collector: None, tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    gc.set_threshold(700, 10, 10)
    async with running(service_settings(tmp_path, kafka_settings, topics), configured=False):
        assert gc.get_threshold() == (700, 10, 10)
