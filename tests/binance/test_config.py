"""Binance configuration rules that protect what is published."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridge.sources.binance.config import BinanceConfig


def _account(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "api_key": f"key-{name}", "secret_key": f"secret-{name}", **fields}


def test_a_sub_account_whose_deposits_are_read_by_its_own_key_and_the_masters_subhisrec_is_refused() -> None:
    accounts = [
        _account("main", mode="master_subhisrec", sub_account_emails="Sub1@example.com"),
        _account("sub1", sub_account="sub1@example.com"),
    ]
    with pytest.raises(ValidationError, match=r"(?i)sub1@example.com has its deposits read twice.*'sub1'.*'main'"):
        BinanceConfig(enabled=True, accounts=accounts)


@pytest.mark.parametrize(
    "own",
    [
        {"sub_account": "sub1@example.com", "deposits": False},  # its key reads only withdrawals
        {"sub_account": "sub1@example.com", "enabled": False},
        {"sub_account": "other@example.com"},
    ],
)
def test_a_sub_account_read_one_way_only_is_accepted(own: dict[str, Any]) -> None:
    accounts = [_account("main", mode="master_subhisrec", sub_account_emails="sub1@example.com"), _account("sub1", **own)]
    assert len(BinanceConfig(enabled=True, accounts=accounts).accounts) == 2
