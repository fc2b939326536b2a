"""Which slot a source or a transfer belongs to in cluster mode: a stable hash, nothing stored.

``slot_of(name, slots)`` is BLAKE2b-64 of the UTF-8 name modulo the slot count. It depends on the
name and the count only, never on the other names configured, so adding or removing an account
never moves another account to a different slot. Changing ``cluster.slots`` does move names: it
is a new layout (see the README, *Cluster mode*), not a live change.
"""

from __future__ import annotations

import hashlib

__all__ = ["slot_of"]


def slot_of(name: str, slots: int) -> int:
    """The slot (0 … slots-1) of a source name (``okx:main``) or a webhook transfer key."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") % slots
