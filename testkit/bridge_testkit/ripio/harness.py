"""The Ripio conformance harness: ``RipioSimulator`` behind the suite's ``ProviderHarness`` protocol."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult
from bridge.sources.ripio.parse import parse_message, parse_rows
from bridge_testkit.conformance import ParserEntry, StreamHarness
from bridge_testkit.ripio.simulator import SCRIPTS, RipioSimulator, Snapshot

__all__ = ["RipioHarness", "HARNESS"]

RECEIVED = "2026-11-22T10:00:00.000Z"


class RipioHarness(StreamHarness):
    name = "ripio"
    parse_target = ("bridge.sources.ripio.service", "parse_message")
    other_account = "second"
    scripts = tuple(name for name, (_, _, steps) in SCRIPTS.items() if len(steps) > 1)
    garbage = '{"id": 7, "topic": "deposit", "body": {'
    wrong_secret = "e7Rw2Tq9Yp4Ux8Zs1Vb6Nm3Kd0Lf5Gh"

    sim: RipioSimulator

    def __init__(self) -> None:
        self.sim = RipioSimulator()

    def account_entry(self, name: str, *, wrong_secret: bool = False) -> dict[str, Any]:
        account = self.sim.accounts[name]
        return {"name": name, "api_token": account.api_token, "api_secret": self.wrong_secret if wrong_secret else account.api_secret}

    def settings(self) -> dict[str, Any]:
        return {
            "ws_url": self.sim.ws_url,
            "rest_url": self.sim.rest_url,
            "sign_query": self.sim.sign_query,
            "ping_interval": 5.0,
            "subscribe_confirm_timeout": 1.0,
            "reconnect_initial": 0.05,
            "reconnect_max": 1.0,
            "min_uptime": 1.0,
            "config_error_retry": 0.5,
            "backfill_interval": 2.0,
            "backfill_overlap": 2.0,
            "backfill_initial_lookback": 60.0,
            "backfill_retry": 0.2,
            "rest_rate_per_second": 40.0,
        }

    def state_of(self, event: Mapping[str, Any]) -> Hashable:
        return Snapshot(event["provider_status"], event["tx_hash"])

    def attempts(self) -> list[float]:
        return self.sim.ticket_attempts(self.account)

    def secrets(self) -> set[str]:
        found = {self.wrong_secret} | self.sim.signatures_seen | self.sim.tickets_issued
        for account in self.sim.accounts.values():
            found |= {account.api_token, account.api_secret}
        return found

    def parsers(self) -> list[ParserEntry]:
        messages: list[dict[str, Any]] = []
        rows: dict[str, list[Any]] = {"deposit": [], "withdrawal": []}
        sampler = RipioSimulator(seed=5)  # never started: it only scripts the payloads
        for script in SCRIPTS:
            transfer = sampler.create(script, "main")
            for index in range(len(transfer.script)):
                transfer.index = index
                transfer.updated_ms = transfer.created_ms + 1000 * index
                messages.append({"id": len(messages) + 1, "topic": transfer.topic, "timestamp": transfer.updated_ms, "body": transfer.body()})
                rows[transfer.topic].append([transfer.row()])

        def amount(raw: Any) -> Any:
            return raw["amount"]

        def fee(raw: Any) -> Any:
            return raw["fee"]

        entries = [
            ParserEntry(
                "ripio.parse_message",
                lambda message: parse_message(message, received_at=RECEIVED),
                tuple(messages),
                amount,
                fee,
                readers=(loads_exact,),
            )
        ]
        def rows_of(topic: str) -> Callable[[Any], Sequence[ParseResult]]:
            return lambda value: parse_rows(topic, value, received_at=RECEIVED)

        for topic, samples in rows.items():
            entries.append(
                ParserEntry(
                    f"ripio.parse_rows[{topic}]",
                    rows_of(topic),
                    tuple(samples),
                    amount,
                    fee,
                    readers=(loads_exact,),
                    objects_only=False,
                )
            )
        return entries


HARNESS = RipioHarness
