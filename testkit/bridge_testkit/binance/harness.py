"""The Binance conformance harness: ``BinanceSimulator`` behind the suite's ``ProviderHarness``.

Binance is a *poll* provider: nothing is pushed, so

* a state is "sent" (``advance``) once a history answer to the account carried it;
* a repeat is the next poll listing the unchanged row (``repeat`` waits for that many re-reads,
  then the simulator stops listing the row so the suite's counts are exact: a poll provider
  would otherwise re-read it every interval);
* a gap is a state the first poll after the change does not get (the account's next requests
  fail), closed by a later poll; faults are 5xx, -1021 (the clock relearnt), hang-ups and 429s;
* refused credentials (-1022) are a configuration error paced by ``config_error_retry``: the
  ``config_error_pacing`` capability; a gap closed by a later poll is the ``poll`` capability.
  There is no connection to drop or hang up, no backfill pass and no sender that retries: none of
  those capabilities.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.contract.events import Account
from bridge.contract.jsonutil import loads_exact
from bridge.sources.binance import messages as m
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.binance.parse import parse_page
from bridge_testkit.binance.lifecycles import SCRIPTS, SimTransfer, snapshot_of
from bridge_testkit.binance.simulator import NOT_JSON, BinanceSimulator
from bridge_testkit.binance.support import FAST, fast_simulator
from bridge_testkit.conformance import GapState, ParserEntry, ProviderHarness, eventually

if TYPE_CHECKING:
    from bridge.service.app import BridgeApp

__all__ = ["BinanceHarness", "HARNESS"]

RECEIVED = "2026-11-22T10:00:00.000Z"
FAULTS = ("500", "-1021", "hangup", "429")


@dataclass(eq=False)
class HarnessTransfer:
    """A scripted transfer; it exists at Binance from its first ``advance`` on."""

    script: str
    sim: SimTransfer | None = None

    @property
    def key(self) -> str:
        assert self.sim is not None, "advance() it first"
        return self.sim.key

    @property
    def finished(self) -> bool:
        return self.sim is not None and self.sim.finished


class BinanceHarness(ProviderHarness):
    name = "binance"
    kind = "poll"
    capabilities = frozenset({"config_error_pacing", "poll"})
    parse_target = ("bridge.sources.binance.service", "parse_page")
    account = "main"
    other_account = "other"
    wrong_secret = "WrongBinanceSecret0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"

    def __init__(self) -> None:
        self.sim = fast_simulator(seed=3)
        self.transfers: list[HarnessTransfer] = []
        self._dir = tempfile.TemporaryDirectory(prefix="binance-harness-")
        self._scripts = itertools.cycle(SCRIPTS)
        self._faults = itertools.cycle(FAULTS)

    async def start(self) -> None:
        await self.sim.start()

    async def stop(self) -> None:
        await self.sim.stop()
        self._dir.cleanup()

    # -- configuration -------------------------------------------------------------------------

    def _entry(self, name: str, *, wrong_secret: bool = False) -> dict[str, Any]:
        account = self.sim.accounts[name]
        entry = account.entry(lookup_uid=False, uid=str(account.uid))
        if wrong_secret:  # a well-formed HMAC secret the simulator does not know
            entry.update(secret_key=self.wrong_secret, key_type="hmac")
        return entry

    def _section(self, accounts: list[dict[str, Any]], overrides: Mapping[str, Any]) -> dict[str, Any]:
        # Settings of the other engines (backfill_enabled, reconnect_*) do not exist for a poll
        # provider, whose section forbids unknown keys: only this engine's and Binance's are applied.
        known = {k: v for k, v in overrides.items() if k in BinanceConfig.model_fields}
        return {"enabled": True, "base_url": self.sim.url, **FAST, "cursor_dir": self._dir.name, "accounts": accounts, **known}

    def section(self, **overrides: Any) -> dict[str, Any]:
        return self._section([self._entry(self.account)], overrides)

    def wrong_secret_section(self, **overrides: Any) -> dict[str, Any]:
        return self._section([self._entry(self.account, wrong_secret=True), self._entry(self.other_account)], overrides)

    @property
    def source_name(self) -> str:
        return f"{self.name}:{self.account}"

    async def ready(self, app: BridgeApp) -> None:
        source = next(s for s in app.sources if s.name == self.source_name)
        await eventually(lambda: source.health.connected, 15.0, "a first complete poll")

    # -- scripted transfers --------------------------------------------------------------------

    def create(self, count: int) -> list[Any]:
        made = [HarnessTransfer(next(self._scripts)) for _ in range(count)]
        self.transfers.extend(made)
        return made

    def _step(self, transfer: HarnessTransfer) -> None:
        if transfer.sim is None:
            transfer.sim = self.sim.create(transfer.script, self.account)
        elif not self.sim.advance(transfer.sim):
            raise AssertionError(f"{transfer.key} has no further state")

    async def _observed(self, transfers: Sequence[HarnessTransfer], timeout: float = 20.0) -> None:
        await eventually(lambda: all(t.sim is not None and t.sim.observed for t in transfers), timeout, "a poll read the new states")

    async def advance(self, transfer: Any) -> None:
        self._step(transfer)
        await self._observed([transfer])

    async def run_lifecycles(self, transfers: Sequence[Any], *, repeat_every: int = 0, faults: bool = False, timeout: float = 30.0) -> None:
        """Every transfer one state further per round, once a poll read the last one; every
        ``repeat_every`` steps a state is also read once more (a repeat); ``faults``: every fourth
        step the account's next request fails (5xx, -1021, a hang-up or a 429)."""
        steps = 0
        while True:
            moving = [t for t in transfers if not t.finished]
            if not moving:
                return
            repeated: list[HarnessTransfer] = []
            for transfer in moving:
                self._step(transfer)
                steps += 1
                if repeat_every and steps % repeat_every == 0:
                    repeated.append(transfer)
                if faults and steps % 4 == 0:
                    kind = next(self._faults)
                    self.sim.fail(kind, account=self.account, retry_after=1 if kind == "429" else None)
            await self._observed(moving, timeout)
            targets = {t: t.sim.served + 1 for t in repeated if t.sim is not None}
            await eventually(lambda targets=targets: all(t.sim is not None and t.sim.served >= n for t, n in targets.items()), timeout, "repeats read")

    async def repeat(self, transfer: Any, times: int = 1) -> None:
        sim = transfer.sim
        assert sim is not None, "advance() it first"
        sim.serve_limit = sim.served + times
        await eventually(lambda: sim.served >= sim.serve_limit, 20.0, f"{times} more polls listing {sim.key}")

    async def gap(self, transfers: Sequence[Any]) -> list[GapState]:
        self.sim.fail("500", account=self.account, times=2 * (FAST["rest_max_retries"] + 1))  # this poll fails for good
        for transfer in transfers:
            self._step(transfer)
        await self._observed(transfers)
        return [GapState(t.key, t.sim.history[-1]) for t in transfers]

    async def send_not_json(self) -> bytes:
        before = self.sim.stats["fault not_json"]
        self.sim.fail("not_json", account=self.account)
        await eventually(lambda: self.sim.stats["fault not_json"] > before, 15.0, "the cut page served")
        return NOT_JSON

    def truth(self) -> dict[str, list[Hashable]]:
        return {t.key: list(t.sim.history) for t in self.transfers if t.sim is not None}

    def state_of(self, event: Mapping[str, Any]) -> Hashable:
        return snapshot_of(event["direction"], event["raw"])

    def secrets(self) -> set[str]:
        found = {self.wrong_secret} | self.sim.signatures_seen
        for account in self.sim.accounts.values():
            found |= {account.api_key, account.secret}
        return found

    def attempts(self) -> list[float]:
        return self.sim.attempts(self.account)

    # -- parsers -------------------------------------------------------------------------------

    def parsers(self) -> list[ParserEntry]:
        sampler = BinanceSimulator(seed=5)  # never started: it only scripts the rows
        rows: dict[str, list[dict[str, Any]]] = {m.DEPOSIT_CHANNEL: [], m.WITHDRAWAL_CHANNEL: []}
        for script in SCRIPTS:
            transfer = sampler.create(script, "main")
            while True:
                channel = m.DEPOSIT_CHANNEL if transfer.direction == "deposit" else m.WITHDRAWAL_CHANNEL
                rows[channel].append(dict(transfer.row))
                if not sampler.advance(transfer):
                    break
        sub_rows = [{k: v for k, v in row.items() if k not in ("completeTime", "travelRuleStatus")} for row in rows[m.DEPOSIT_CHANNEL]]
        pages = {m.DEPOSIT_CHANNEL: rows[m.DEPOSIT_CHANNEL], m.WITHDRAWAL_CHANNEL: rows[m.WITHDRAWAL_CHANNEL], m.SUB_DEPOSIT_CHANNEL: sub_rows}
        owner = Account(id=str(sampler.accounts["main"].uid))

        def amount(raw: Any) -> Any:
            return raw["amount"]

        def fee(raw: Any) -> Any:
            return raw["transactionFee"]

        entries = []
        for channel, samples in pages.items():
            # one-row pages, and one page of every row
            seeds = tuple(loads_exact(_dumps([row])) for row in samples) + (loads_exact(_dumps(samples)),)
            entries.append(
                ParserEntry(
                    f"binance.parse_page[{channel}]",
                    lambda value, channel=channel: parse_page(channel, value, received_at=RECEIVED, account=owner),
                    seeds,
                    amount,
                    fee if channel == m.WITHDRAWAL_CHANNEL else None,
                    readers=(loads_exact,),
                    objects_only=False,
                )
            )
        return entries


def _dumps(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


HARNESS = BinanceHarness
