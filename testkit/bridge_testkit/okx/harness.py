"""The OKX conformance harness: ``OkxSimulator`` behind the suite's ``ProviderHarness`` protocol."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import orjson

from bridge.contract.events import Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult
from bridge.sources.okx.parse import DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL, parse_push, parse_rows
from bridge_testkit.conformance import ParserEntry, StreamHarness
from bridge_testkit.okx.simulator import PUSH_ONLY_SCRIPTS, SCRIPTS, OkxSimulator, Snapshot

__all__ = ["OkxHarness", "HARNESS"]

RECEIVED = "2026-11-22T10:00:00.000Z"


class OkxHarness(StreamHarness):
    name = "okx"
    parse_target = ("bridge.sources.okx.service", "parse_push")
    other_account = "sub1"
    scripts = PUSH_ONLY_SCRIPTS
    garbage = '{"arg": {"channel": "deposit-info"}, "data": ['
    wrong_secret = "K9vX2mQ7tB4nW8rZ1cF6hJ3L"

    sim: OkxSimulator

    def __init__(self) -> None:
        self.sim = OkxSimulator()

    def account_entry(self, name: str, *, wrong_secret: bool = False) -> dict[str, Any]:
        account = self.sim.accounts[name]
        return {
            "name": name,
            "api_key": account.api_key,
            "secret_key": self.wrong_secret if wrong_secret else account.secret_key,
            "passphrase": account.passphrase,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "ws_url": self.sim.ws_url,
            "rest_url": self.sim.rest_url,
            "ping_interval": 5.0,
            "reconnect_initial": 0.05,
            "reconnect_max": 1.0,
            "min_uptime": 1.0,
            "config_error_retry": 0.5,
            "backfill_interval": 2.0,
            "backfill_overlap": 2.0,
            "backfill_initial_lookback": 60.0,
            "backfill_retry": 0.2,
            "rest_rate_per_second": 6.0,
        }

    def state_of(self, event: Mapping[str, Any]) -> Hashable:
        return Snapshot(event["provider_status"], event["confirmations"], event["tx_hash"])

    def attempts(self) -> list[float]:
        return self.sim.attempts(self.account)

    def secrets(self) -> set[str]:
        found = {self.wrong_secret} | self.sim.signatures_seen
        for account in self.sim.accounts.values():
            found |= {account.api_key, account.secret_key, account.passphrase}
        return found

    def parsers(self) -> list[ParserEntry]:
        pushes: list[dict[str, Any]] = []
        rows: dict[str, list[Any]] = {DEPOSIT_CHANNEL: [], WITHDRAWAL_CHANNEL: []}
        sampler = OkxSimulator(seed=5)  # never started: it only scripts the payloads
        for script in SCRIPTS:
            transfer = sampler.create(script, "main" if len(pushes) % 2 else "sub1")
            for index in range(len(transfer.script)):
                transfer.index = index
                pushes.append({"arg": {"channel": transfer.channel, "uid": transfer.owner.uid}, "data": [transfer.item(1674103661147 + index)]})
                rows[transfer.channel].append([transfer.row()])

        def amount(raw: Any) -> Any:
            return raw["amt"]

        def fee(raw: Any) -> Any:
            return raw["fee"]

        entries = [
            ParserEntry(
                "okx.parse_push",
                lambda message: parse_push(message, received_at=RECEIVED),
                tuple(pushes),
                amount,
                fee,
                readers=(orjson.loads, loads_exact),  # the client reads frames with orjson first
                floats=True,
            )
        ]
        def rows_of(channel: str) -> Callable[[Any], Sequence[ParseResult]]:
            return lambda value: parse_rows(channel, value, received_at=RECEIVED, via=Via.BACKFILL, uid="42")

        for channel, samples in rows.items():
            entries.append(
                ParserEntry(
                    f"okx.parse_rows[{channel}]",
                    rows_of(channel),
                    tuple(samples),
                    amount,
                    fee,
                    readers=(loads_exact,),
                    objects_only=False,
                )
            )
        return entries


HARNESS = OkxHarness
