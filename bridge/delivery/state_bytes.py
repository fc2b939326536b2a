"""A transfer's dedup state as bytes: a flags byte, an open transfer's 8-byte tracking block, then
the first 8 bytes of each published ``event_id`` (see ``bridge.delivery.dedup``). Pure functions
over two such states: which is later, and the merge of two writers' views."""

from __future__ import annotations

from bridge.delivery.open_transfers import TRACKED_FLAG, ids_offset, read_tracking, tracking_block

__all__ = ["FINAL_FLAG", "published_count", "closed", "newer", "merged"]

FINAL_FLAG = 0x01


def published_count(state: bytes) -> int:
    """How many states of the transfer were published (ids held after the flags and tracking)."""
    return (len(state) - ids_offset(state)) // 8


def closed(state: bytes) -> bytes:
    """``state`` as a final one: the final flag set, the tracking block dropped."""
    return bytes(((state[0] & ~TRACKED_FLAG) | FINAL_FLAG,)) + state[ids_offset(state) :]


def newer(a: bytes, b: bytes) -> bytes:
    """Of two states of one transfer, the later one: ids only grow (one appended per publish), and
    a final state stays final."""
    later, other = (a, b) if (published_count(a), a[0] & FINAL_FLAG) >= (published_count(b), b[0] & FINAL_FLAG) else (b, a)
    if other[0] & FINAL_FLAG and not later[0] & FINAL_FLAG:
        return closed(later)
    return later


def merged(a: bytes, b: bytes) -> bytes:
    """Both writers' view of one transfer: every id either published (``a``'s first), final if
    either is final, tracking kept with the earlier first-seen. Two processes sharing a store write
    through this, so neither overwrites a state the other published (last writer wins would)."""
    if a == b:
        return a
    a_ids, b_ids = a[ids_offset(a) :], b[ids_offset(b) :]
    final = (a[0] | b[0]) & FINAL_FLAG
    # Fast path, the usual case: one extends the other (a single writer appends one id per publish).
    if b_ids.startswith(a_ids) and _covers(b, a, final):
        return b
    if a_ids.startswith(b_ids) and _covers(a, b, final):
        return a
    have = {a_ids[i : i + 8] for i in range(0, len(a_ids), 8)}
    ids = a_ids + b"".join(b_ids[i : i + 8] for i in range(0, len(b_ids), 8) if b_ids[i : i + 8] not in have)
    if final:
        return bytes((FINAL_FLAG,)) + ids
    tracked = [t for t in (read_tracking(a), read_tracking(b)) if t is not None]
    if not tracked:
        return b"\x00" + ids
    kind = tracked[0][0]
    first, last = min(t[1] for t in tracked), max(t[2] for t in tracked)
    return bytes((TRACKED_FLAG,)) + tracking_block(kind, first, last) + ids


def _covers(later: bytes, other: bytes, final: int) -> bool:
    """``later`` (whose ids extend ``other``'s) is the merge: final when either is, and tracking
    from no later a first-seen to no earlier a last change."""
    if later[0] & FINAL_FLAG:
        return True
    if final:
        return False
    if later[0] & other[0] & TRACKED_FLAG and later[1:6] == other[1:6]:
        # One writer's states: same kind and first-seen; the 3-byte big-endian delta compares as bytes.
        return later[6:9] >= other[6:9]
    mine, theirs = read_tracking(later), read_tracking(other)
    return theirs is None or (mine is not None and mine[1] <= theirs[1] and mine[2] >= theirs[2])
