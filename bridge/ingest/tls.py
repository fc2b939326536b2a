"""TLS for the provider connections: the system's trust store, or a CA bundle the operator names.

A private CA or a TLS-inspecting egress proxy is trusted by naming its PEM bundle, never by turning
verification off (there is no setting for that).
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path

__all__ = ["client_context", "websocket_ssl"]


@lru_cache(maxsize=16)
def client_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying client context (hostname checked); ``ca_bundle`` replaces the system's CAs."""
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_bundle))


def websocket_ssl(url: str, ca_bundle: Path | None) -> ssl.SSLContext | None:
    """What ``websockets.connect(ssl=...)`` takes: a context for ``wss://``, None for ``ws://``
    (websockets refuses a context for one and None for the other)."""
    if not url.lower().startswith("wss://"):
        return None
    return client_context(ca_bundle)
