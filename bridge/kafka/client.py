"""Connection options every Kafka client of the bridge shares: producer, admin client, consumers."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.helpers import create_ssl_context

from bridge.kafka.settings import KafkaSettings

__all__ = ["kafka_client_options"]

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
