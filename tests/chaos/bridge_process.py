"""The bridge under chaos: the real service shell in a separate process the suite can ``kill -9``.

``python -m tests.chaos.bridge_process CONFIG.json`` builds ``ServiceSettings`` from the file and
runs ``BridgeApp`` — the same start-up, supervision, webhook route and shutdown as production, so
what survives the chaos run is what the deployed service does, not a test assembly. It prints
``READY`` once the dedup state is restored, Kafka answered, the webhook route listens and every
source runs; it then runs until killed, or until SIGTERM (exit code of the app).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bridge.observability.logs import configure_logging
from bridge.service.app import BridgeApp, ServiceSettings


async def run(config: dict[str, Any]) -> int:
    """Run the service; ``READY`` on stdout tells the orchestrator when faults may resume."""
    settings = ServiceSettings(**config)
    configure_logging(settings.log.level, settings.log.format, settings.log.levels)
    app = BridgeApp(settings)
    runner = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        print("READY", flush=True)
    else:
        started.cancel()
    return int(await runner)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        raise SystemExit(asyncio.run(run(json.load(handle))))
