"""What every webhook request is checked and read with: the capped body, the client's address
behind trusted proxies, header-safe text, error reasons, and the memory of dead-lettered bodies."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Generic, TypeVar

from aiohttp import web

from bridge.contract.parsing import error_reason
from bridge.ingest.settings import IPNetwork

__all__ = ["RecentDigests", "read_capped", "client_address", "describe_error", "header_text", "IPAddress", "MAX_HEADER_TEXT"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
A = TypeVar("A")
_CHUNK = 65_536
MAX_HEADER_TEXT = 256


class RecentDigests(Generic[A]):
    """Bounded memory of bodies already dead-lettered, with the status they were answered."""

    def __init__(self, limit: int):
        self._limit = limit
        self._items: OrderedDict[bytes, A] = OrderedDict()

    def get(self, digest: bytes) -> A | None:
        answer = self._items.get(digest)
        if answer is not None:
            self._items.move_to_end(digest)
        return answer

    def add(self, digest: bytes, answer: A) -> None:
        self._items[digest] = answer
        self._items.move_to_end(digest)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)


async def read_capped(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it grows past ``limit`` (chunked bodies have no length)."""
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def client_address(request: web.Request, trusted_proxies: list[IPNetwork]) -> IPAddress | None:
    """The peer, or — when the peer is a trusted proxy — the nearest untrusted X-Forwarded-For hop."""
    address = _ip(request.remote)
    if address is None or not trusted_proxies:
        return address
    hops = [hop for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    for hop in reversed(hops):
        if not any(address in network for network in trusted_proxies):
            return address
        address = _ip(hop.strip())
        if address is None:
            return None
    return address


def _ip(text: str | None) -> IPAddress | None:
    """An address as the allowlist compares it (IPv4-mapped IPv6 as IPv4); None if unreadable."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def describe_error(exc: Exception) -> str:
    """A dead letter's reason: one line that names what failed, never a traceback (the parsers'
    ``error_reason``, so a webhook's reason reads the same whether its parser or the engine caught it)."""
    return error_reason(exc)


def header_text(value: str | None) -> str | None:
    """A sender-chosen string fit for a Kafka header: valid UTF-8, bounded."""
    if not value:
        return None
    return value[:MAX_HEADER_TEXT].encode("utf-8", "replace").decode("utf-8")
