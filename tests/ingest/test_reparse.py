"""Every provider's dead-letter parser (``ProviderPlugin.reparse``) gives back, from the dead letter
its source writes, the events the provider's own parser gives from the payload received."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.contract.events import Account, DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import dumps, loads_exact
from bridge.contract.parsing import ParseResult, item_bytes, refused
from bridge.ingest.plugins import plugin_for, registered
from bridge.sources.binance import parse as binance
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.fireblocks import parse as fireblocks
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.okx import parse as okx
from bridge.sources.openxswitch import messages as oxs_messages
from bridge.sources.openxswitch import parse as oxs
from bridge.sources.ripio import parse as ripio
from tests.fireblocks.test_parse import TX
from tests.support import RECEIVED, fixture_bytes


def reparse(provider: str, channel: str, raw: bytes, account: str | None = None, section: Any = None) -> list[ParseResult]:
    parser = plugin_for(provider).reparser()
    assert parser is not None
    letter = DeadLetter(Provider(provider), channel, "broken before", raw, RECEIVED, account)
    return list(parser(section, letter))


def ids(results: list[ParseResult]) -> list[str]:
    assert all(isinstance(item, TransferEvent) for item in results), results
    return [item.event_id for item in results if isinstance(item, TransferEvent)]


def test_every_installed_provider_declares_a_dead_letter_parser() -> None:
    assert {plugin.name for plugin in registered() if plugin.reparser() is not None} == {p.name for p in registered()}


def test_okx_items_and_whole_frames_parse_again_into_the_same_events() -> None:
    raw = fixture_bytes("okx/deposit-info.push.json")
    push = loads_exact(raw)
    expected = ids(okx.parse_push(push, received_at=RECEIVED))
    assert ids(reparse("okx", "ws/v5/business", raw)) == expected
    item = item_bytes(push["data"][0])
    assert ids(reparse("okx", "deposit-info", item, push["arg"]["uid"])) == expected[:1]


def test_ripio_bodies_rows_and_frames_parse_again_into_the_same_events() -> None:
    raw = fixture_bytes("ripio/deposit.crypto.json")
    message = loads_exact(raw)
    expected = ids(ripio.parse_message(message, received_at=RECEIVED))
    assert ids(reparse("ripio", "stream", raw)) == expected
    assert ids(reparse("ripio", "deposit", item_bytes(message["body"]))) == expected
    assert ids(reparse("ripio", "deposit", dumps([message["body"]]), "user-1")) == expected


def test_openxswitch_bodies_parse_again_and_a_non_transfer_is_nothing_to_publish() -> None:
    raw = fixture_bytes("openxswitch/withdraw.confirmed.json")
    delivery = oxs_messages.read_delivery(loads_exact(raw))
    assert ids(reparse("openxswitch", "withdraw.confirmed", raw)) == ids(oxs.parse_delivery(delivery.document, received_at=RECEIVED))
    assert reparse("openxswitch", "webhook", fixture_bytes("openxswitch/instant_swap.completed.json")) == []
    broken = b'{"requestId": "x", "method": "withdraw.c'
    letter = refused(reparse("openxswitch", "webhook", broken))
    assert letter is not None and letter.reason and (letter.channel, letter.raw) == ("webhook", broken)


def test_binance_rows_and_pages_parse_again_with_the_sections_rules() -> None:
    raw = fixture_bytes("binance/withdraw-history.json")
    rows = loads_exact(raw)
    account = Account(id="acct-1")
    section = BinanceConfig()
    expected = ids(binance.parse_page("capital/withdraw/history", rows, received_at=RECEIVED, account=account, rules=section.rules))
    assert ids(reparse("binance", "capital/withdraw/history", raw, "acct-1", section)) == expected
    assert ids(reparse("binance", "capital/withdraw/history", item_bytes(rows[0]), "acct-1", section)) == expected[:1]


def test_fireblocks_rows_and_webhook_bodies_parse_again_with_the_sections_rules() -> None:
    section = FireblocksConfig()
    rules = fireblocks.Rules.of(section)
    body = {"id": "n-1", "eventType": "transaction.status.updated", "workspaceId": "ws", "createdAt": 1761904861250, "data": copy.deepcopy(TX)}
    expected = ids(fireblocks.parse_delivery(body, received_at=RECEIVED, rules=rules))
    assert ids(reparse("fireblocks", "transaction.status.updated", dumps(body), "ws", section)) == expected
    assert ids(reparse("fireblocks", "transactions", dumps(TX), "ws", section)) == expected
    skipped = {**body, "data": {**copy.deepcopy(TX), "operation": "STAKE"}}
    assert reparse("fireblocks", "transaction.status.updated", dumps(skipped), "ws", section) == []


def test_a_payload_still_broken_is_a_dead_letter_with_todays_reason_or_an_error() -> None:
    push = loads_exact(fixture_bytes("okx/deposit-info.push.json"))
    del push["data"][0]["state"]
    (letter,) = reparse("okx", "deposit-info", item_bytes(push["data"][0]))
    assert isinstance(letter, DeadLetter) and letter.reason == "missing required field 'state'"
    refusals = {provider: refused(reparse(provider, "somewhere-else", b"{}")) for provider in ("okx", "ripio")}
    assert {provider: letter and letter.reason for provider, letter in refusals.items()} == {
        "okx": "no OKX parser for channel 'somewhere-else'",
        "ripio": "no Ripio parser for channel 'somewhere-else'",
    }


@pytest.mark.parametrize("provider", ["okx", "ripio", "openxswitch", "fireblocks", "binance"])
@pytest.mark.parametrize("raw", [b"not json", b"[1, 2", b"", b"\xff\xfe"])
def test_a_dead_letter_parser_never_raises_bytes_that_are_not_json_are_one_refusal(provider: str, raw: bytes) -> None:
    """The parser contract for ``reparse``: the bytes of any channel, refused with the decoder's
    reason, the letter's channel and the bytes as they are."""
    channel = {"okx": "ws/v5/business", "ripio": "stream", "openxswitch": "webhook", "fireblocks": "transactions", "binance": "capital/deposit/hisrec"}[provider]
    letter = refused(reparse(provider, channel, raw, "acct"))
    assert letter is not None and letter.reason and (letter.channel, letter.raw, letter.account_id) == (channel, raw, "acct")
