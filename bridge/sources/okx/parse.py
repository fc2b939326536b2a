"""OKX ``deposit-info`` / ``withdrawal-info`` items (WebSocket push or REST history) → contract v1.

Pure: no I/O, no clock. The same item functions parse pushes and backfill rows, because the REST
history endpoints return the same fields (minus ``pTime``). The entry points (``parse_push``,
``parse_rows``) follow the parser contract of ``bridge.contract.parsing``: they never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from bridge.contract.events import (
    Account,
    Direction,
    Provider,
    Source,
    TransferEvent,
    Via,
    build_event,
)
from bridge.contract.networks import canonical_network
from bridge.contract.parsing import (
    ParseError,
    ParseResult,
    optional_decimal,
    optional_int,
    optional_str,
    parse_items,
    refusal,
    require_decimal,
    require_mapping,
    require_str,
)
from bridge.contract.status_tables import OKX_DEPOSIT, OKX_WITHDRAWAL, lookup
from bridge.contract.timeutil import from_epoch_ms

__all__ = ["DEPOSIT_CHANNEL", "WITHDRAWAL_CHANNEL", "WS_DLQ_CHANNEL", "parse_push", "parse_deposit", "parse_withdrawal", "parse_rows"]

DEPOSIT_CHANNEL = "deposit-info"
WITHDRAWAL_CHANNEL = "withdrawal-info"
WS_DLQ_CHANNEL = "ws/v5/business"
"""Where a whole frame is dead-lettered (one the parser refuses, or that is not JSON)."""


def _times(item: Mapping[str, Any]) -> tuple[str | None, str]:
    created = from_epoch_ms(item["ts"], field="ts") if item.get("ts") not in (None, "") else None
    if item.get("pTime") not in (None, ""):
        occurred = from_epoch_ms(item["pTime"], field="pTime")
    elif created is not None:
        occurred = created  # REST history rows carry no push time
    else:
        raise ParseError("missing both 'pTime' and 'ts'")
    return created, occurred


def _account(item: Mapping[str, Any], uid: str | None) -> Account:
    return _account_of(optional_str(item, "uid") or uid, optional_str(item, "subAcct"))


@lru_cache(maxsize=1024)
def _account_of(uid: str | None, sub_account: str | None) -> Account:
    """Frozen, so one instance per account serves every event (a model built per event costs more
    than the rest of the account handling)."""
    return Account(id=uid, sub_account=sub_account)


@lru_cache(maxsize=16)
def _source(channel: str, via: Via) -> Source:
    return Source(channel=channel, via=via)


def parse_deposit(
    item: Mapping[str, Any], *, received_at: str, via: Via = Via.PUSH, uid: str | None = None
) -> TransferEvent:
    state = require_str(item, "state")
    status, text = lookup(OKX_DEPOSIT, state)
    created, occurred = _times(item)
    chain = optional_str(item, "chain")
    return build_event(
        provider=Provider.OKX,
        direction=Direction.DEPOSIT,
        transfer_id=require_str(item, "depId"),
        status=status,
        provider_status=state,
        provider_status_text=text,
        amount=require_decimal(item, "amt"),
        asset=require_str(item, "ccy"),
        chain=chain,
        network=canonical_network(chain),
        confirmations=optional_int(item, "actualDepBlkConfirm"),
        tx_hash=optional_str(item, "txId"),
        from_address=optional_str(item, "from"),
        to_address=optional_str(item, "to"),
        internal=optional_str(item, "fromWdId") is not None,
        created_at=created,
        occurred_at=occurred,
        received_at=received_at,
        account=_account(item, uid),
        source=_source(DEPOSIT_CHANNEL, via),
        raw=dict(item),
    )


def _address_tag(item: Mapping[str, Any]) -> dict[str, str] | None:
    tag: dict[str, str] = {}
    for wire, name in (("tag", "tag"), ("memo", "memo"), ("pmtId", "payment_id")):
        value = optional_str(item, wire)
        if value is not None:
            tag[name] = value
    extras = item.get("addrEx")
    if extras is not None:
        for name, value in require_mapping(extras, "addrEx").items():
            if value not in (None, ""):
                tag[str(name)] = str(value)
    return tag or None


def parse_withdrawal(
    item: Mapping[str, Any], *, received_at: str, via: Via = Via.PUSH, uid: str | None = None
) -> TransferEvent:
    state = require_str(item, "state")
    status, text = lookup(OKX_WITHDRAWAL, state)
    created, occurred = _times(item)
    chain = optional_str(item, "chain")
    to_type = optional_str(item, "toAddrType")
    return build_event(
        provider=Provider.OKX,
        direction=Direction.WITHDRAWAL,
        transfer_id=require_str(item, "wdId"),
        client_transfer_id=optional_str(item, "clientId"),
        status=status,
        provider_status=state,
        provider_status_text=text,
        amount=require_decimal(item, "amt"),
        fee=optional_decimal(item, "fee"),
        fee_asset=optional_str(item, "feeCcy"),
        asset=require_str(item, "ccy"),
        chain=chain,
        network=canonical_network(chain),
        tx_hash=optional_str(item, "txId"),
        from_address=optional_str(item, "from"),
        to_address=optional_str(item, "to"),
        address_tag=_address_tag(item),
        internal=None if to_type is None else to_type == "2",
        created_at=created,
        occurred_at=occurred,
        received_at=received_at,
        account=_account(item, uid),
        source=_source(WITHDRAWAL_CHANNEL, via),
        raw=dict(item),
    )


_PARSERS = {DEPOSIT_CHANNEL: parse_deposit, WITHDRAWAL_CHANNEL: parse_withdrawal}


def parse_rows(
    channel: str, rows: Any, *, received_at: str, via: Via, uid: str | None = None
) -> list[ParseResult]:
    """Items of one channel (a push's ``data`` or a REST page), each parsed on its own; never
    raises (a channel with no parser is a ``refusal``)."""
    parse_one = _PARSERS.get(channel)
    if parse_one is None:
        reason = f"no OKX parser for channel {channel[:80]!r}"
        return [refusal(reason, provider=Provider.OKX, channel=channel, payload=rows, received_at=received_at, account_id=uid)]
    return parse_items(
        rows,
        lambda item: parse_one(item, received_at=received_at, via=via, uid=uid),
        provider=Provider.OKX,
        channel=channel,
        received_at=received_at,
        account_id=uid,
        not_a_list="'data' is not a list",
    )


def parse_push(message: Any, *, received_at: str) -> list[ParseResult]:
    """A data push ``{"arg": {"channel", "uid"}, "data": [...]}``, under the parser contract of
    ``bridge.contract.parsing``: never raises; a message that is not a push of a transfer channel
    is one ``refusal`` (the stream dead-letters the frame)."""
    try:
        arg = require_mapping(require_mapping(message, "frame").get("arg"), "arg")
        channel = arg.get("channel")
        if not isinstance(channel, str) or channel not in _PARSERS:
            raise ParseError(f"push for unexpected channel {channel!r}")
        uid = optional_str(arg, "uid")
    except ParseError as exc:
        return [refusal(str(exc), provider=Provider.OKX, channel=WS_DLQ_CHANNEL, payload=message, received_at=received_at)]
    return parse_rows(channel, message.get("data"), received_at=received_at, via=Via.PUSH, uid=uid)
