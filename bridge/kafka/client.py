"""Connection options every Kafka client of the bridge shares: producer, admin client, consumers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.helpers import create_ssl_context

from bridge.kafka.settings import KafkaSettings

__all__ = ["kafka_client_options", "pace_metadata_updates"]

_SASL_WIRE_LOG = logging.getLogger("aiokafka.conn")


def kafka_client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by producer, admin client and consumers."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "retry_backoff_ms": settings.retry_backoff_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        # aiokafka.conn logs every request at DEBUG, and a SASL/PLAIN authenticate request carries
        # the password in clear: never let that logger go below INFO while credentials are in use.
        if _SASL_WIRE_LOG.level < logging.INFO:
            _SASL_WIRE_LOG.setLevel(logging.INFO)
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


def pace_metadata_updates(client: Any, *, initial: float, maximum: float = 1.0) -> None:
    """Space out an aiokafka client's metadata updates while they fail.

    aiokafka retries a failed metadata update at once: its producer's sender asks for one whenever a
    partition has no known leader (as after a broker's controlled shutdown), the refused connection
    fails it in microseconds, and the sender asks again — thousands of attempts and two ERROR log
    lines each per second, a whole core, for as long as the broker is away. Here, after a failed
    update, the next one waits ``initial`` seconds, doubling up to ``maximum``; a success resets
    it. Everything waiting on the update (the sender, ``fetch_all_metadata``) waits with it.
    """
    update = client._metadata_update
    failed_at: float | None = None
    delay = 0.0

    async def paced(cluster_metadata: Any, topics: Any) -> bool:
        nonlocal failed_at, delay
        if failed_at is not None:
            wait = failed_at + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        ok = bool(await update(cluster_metadata, topics))
        if ok:
            failed_at, delay = None, 0.0
        else:
            failed_at, delay = time.monotonic(), min(max(initial, delay * 2), maximum)
        return ok

    client._metadata_update = paced
