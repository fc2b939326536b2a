"""Which reads ask for the open transfers the hot window no longer reads (pure: no I/O)."""

from __future__ import annotations

from bridge.sources.binance import messages as m
from bridge.sources.binance.tracker import OpenTransfer, Requery, requeries

NOW = 1_700_000_000_000
DAY = 86_400_000


def withdrawal(i: int) -> OpenTransfer:
    return OpenTransfer(f"binance:withdrawal:w{i}", m.WITHDRAWAL_CHANNEL, f"w{i}", NOW - 10 * DAY + i)


def deposit(i: int, tx_id: str | None, email: str | None = None) -> OpenTransfer:
    channel = m.SUB_DEPOSIT_CHANNEL if email else m.DEPOSIT_CHANNEL
    return OpenTransfer(f"binance:deposit:d{i}", channel, f"d{i}", NOW - 20 * DAY + i * 1000, tx_id, email)


def test_withdrawals_are_asked_for_by_id_list_45_at_a_time_unless_deferred() -> None:
    stale = [withdrawal(i) for i in range(100)]
    reads = list(requeries(stale, NOW, withdrawals=True, txid_max=10))
    assert [len(r.params["idList"].split(",")) for r in reads] == [45, 45, 10]
    assert {r.path for r in reads} == {m.WITHDRAWAL_PATH} and reads[2].params["idList"].endswith("w98,w99")
    assert list(requeries(stale, NOW, withdrawals=False, txid_max=10)) == []


def test_deposits_are_asked_for_by_transaction_or_by_one_window_when_many() -> None:
    stale = [deposit(1, "tx-a"), deposit(2, "tx-a"), deposit(3, None), deposit(4, "tx-b", "sub@example.com")]
    start = NOW - 20 * DAY
    assert list(requeries(stale, NOW, withdrawals=True, txid_max=10)) == [
        Requery(m.DEPOSIT_PATH, {"startTime": str(start + 1000 - DAY), "endTime": str(start + 2000 + DAY), "txId": "tx-a"}),
        Requery(m.DEPOSIT_PATH, {"startTime": str(start + 3000 - 1000), "endTime": str(start + 3000 + 1000)}),  # no hash: ±1 s
        Requery(m.SUB_DEPOSIT_PATH, {"startTime": str(start + 4000 - DAY), "endTime": str(start + 4000 + DAY), "txId": "tx-b"}, "sub@example.com"),
    ]
    assert list(requeries(stale[:3], NOW, withdrawals=True, txid_max=2)) == [Requery(m.DEPOSIT_PATH, {}, None, (start + 1000, start + 3000))]


def test_travel_rule_withdrawals_are_asked_for_by_one_window_a_second_wider_each_way() -> None:
    local = [OpenTransfer(f"binance:withdrawal:l{i}", m.LOCALENTITY_WITHDRAWAL_CHANNEL, f"l{i}", NOW - 9 * DAY + i * 60_000) for i in range(3)]
    reads = list(requeries([withdrawal(1), *local], NOW, withdrawals=True, txid_max=10))
    assert reads == [
        Requery(m.WITHDRAWAL_PATH, {"idList": "w1"}),
        Requery(m.LOCALENTITY_WITHDRAWAL_PATH, {}, None, (NOW - 9 * DAY - 1_000, NOW - 9 * DAY + 120_000 + 1_000)),
    ]
    assert list(requeries(local, NOW, withdrawals=False, txid_max=10)) == []
