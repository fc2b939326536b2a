"""Worker process entry: ``python -m tests.benchmarks.child ROLE PARAMS_JSON``.

Roles import their module lazily, so a worker loads only what its side needs (the cold restart
figure includes this process's own start).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import traceback

ROLES = {
    "okx-bridge": "tests.benchmarks.okx_load:bridge_worker",
    "aiokafka": "tests.benchmarks.baselines:aiokafka_worker",
    "naive-okx": "tests.benchmarks.baselines:naive_okx_worker",
    "webhook-bridge": "tests.benchmarks.webhooks:bridge_worker",
    "webhook-http": "tests.benchmarks.webhooks:http_only_worker",
    "webhook-naive": "tests.benchmarks.webhooks:naive_worker",
    "ws-bare": "tests.benchmarks.connections:bare_ws_worker",
    "committed-tail": "tests.benchmarks.cluster_bench:tail_worker",
    "binance-poll": "tests.benchmarks.poll:poll_worker",
    "dedup-fill": "tests.benchmarks.dedup_state:fill_worker",
    "dedup-memory": "tests.benchmarks.dedup_state:memory_worker",
    "dedup-restart": "tests.benchmarks.dedup_state:restart_worker",
    "dedup-naive": "tests.benchmarks.dedup_state:naive_worker",
}


def main() -> int:
    role, params = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    module, _, name = ROLES[role].partition(":")
    worker = getattr(importlib.import_module(module), name)
    try:
        asyncio.run(worker(params))
    except BaseException as exc:  # tell the orchestrator why instead of leaving it waiting
        traceback.print_exc()
        sys.stdout.write(f"@@ERROR {json.dumps({'error': f'{exc.__class__.__name__}: {exc}'[:2000]})}\n")
        sys.stdout.flush()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
