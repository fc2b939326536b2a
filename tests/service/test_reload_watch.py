"""The configuration file watcher: a file still being written when a reload reads it is read again
once it is whole."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bridge.service.reload import Reloader

WHOLE = b"okx:\n  accounts:\n    - name: alpha\n    - name: beta\n"


class _Recording(Reloader):
    """Records what each reload read; the writer finishes the file while the first reload runs."""

    def __init__(self, config: Path, *, watch_seconds: float = 0.05) -> None:
        host: Any = SimpleNamespace(settings=SimpleNamespace(reload=SimpleNamespace(watch_seconds=watch_seconds), secrets_dir=None))
        super().__init__(host, lambda: host.settings, watch=[config])
        self.config = config
        self.seen: list[bytes] = []

    async def reload(self, reason: str = "requested") -> str:
        self.seen.append(self.config.read_bytes())
        if len(self.seen) == 1 and self.seen[0] != WHOLE:
            self.config.write_bytes(WHOLE)  # the rest of the write lands while this reload runs
        return "refused"


async def test_a_file_completed_while_a_reload_read_its_first_half_is_reloaded_whole(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_bytes(b"okx:\n")
    reloader = _Recording(config)
    reloader.start()
    try:
        await asyncio.sleep(0.2)  # the watcher has its first fingerprint
        config.write_bytes(WHOLE[:25])  # truncated: the writer is halfway
        for _ in range(100):
            if WHOLE in reloader.seen:
                break
            await asyncio.sleep(0.05)
    finally:
        await reloader.stop()
    assert reloader.seen[-1] == WHOLE, reloader.seen


async def test_a_file_written_in_two_steps_between_two_looks_is_reloaded_once_and_whole(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_bytes(b"okx:\n")
    reloader = _Recording(config, watch_seconds=0.3)
    reloader.start()
    try:
        await asyncio.sleep(0.1)  # the watcher has its first fingerprint
        config.write_bytes(WHOLE[:25])
        await asyncio.sleep(0.05)  # the second half lands before the watcher's next look
        config.write_bytes(WHOLE)
        for _ in range(100):
            if reloader.seen:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.7)  # two more looks: nothing else to reload
    finally:
        await reloader.stop()
    assert reloader.seen == [WHOLE]


async def test_a_storm_of_reload_requests_reads_the_configuration_once_per_reload_not_once_per_signal(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_bytes(WHOLE)
    reloader = _Recording(config, watch_seconds=0)
    for _ in range(500):
        reloader.request("SIGHUP")  # a storm before the reloader's first turn
    reloader.start()
    try:
        await asyncio.sleep(0.3)
        reloader.request("SIGHUP")  # a later signal still reloads
        await asyncio.sleep(0.3)
    finally:
        await reloader.stop()
    assert reloader.seen == [WHOLE, WHOLE]
