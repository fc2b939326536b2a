"""The provider conformance protocol: what a provider's test harness offers the conformance suite.

One suite (``tests/conformance``) decides whether a provider works, the way Singer's standard tap
tests or faststream's broker test cases do: the same scenarios run against every registered
provider that ships a harness, on the real service shell and a real broker. A harness wraps the
provider's simulator and speaks one small protocol (``ProviderHarness``):

* ``section(**overrides)`` / ``wrong_secret_section(**overrides)``: the provider's configuration
  section pointing at the simulator (intervals shrunk for tests), and one whose credentials the
  simulator refuses;
* ``ready(app)``: wait until the running service's source is connected (subscribed, or serving);
* ``create`` / ``advance`` / ``run_lifecycles`` / ``truth``: scripted transfers and the ground truth
  — every state per event key, in order — and ``state_of`` to read the same state out of a
  published event;
* ``repeat``: an identical repeat of a transfer's current state (a re-push, a re-delivery);
* ``gap``: states the source does not get the first time — a stream's connection drops and
  transfers advance while it is down (backfill closes it); a webhook delivery is not acknowledged
  (its answer is lost, or it never arrives) and the sender retries it;
* ``send_not_json``: a payload that is not JSON, returning its raw bytes (the DLQ must hold them);
* ``hang_up_after_open`` / ``attempts``: a venue that hangs up right after every open, and the
  times of the connection attempts it saw;
* ``secrets``: every secret that exists (credentials, signatures, tickets), to search logs for;
* ``parse_target`` and ``parsers()``: the parse function the source calls (to break it on purpose)
  and the provider's pure parse entry points (for the shared parser properties).

``capabilities`` says which scenarios apply; the suite generates a test only for the harnesses
that have what it needs (no skips). ``harness_for(name)`` finds ``bridge_testkit.<name>.harness``
(its ``HARNESS``: a harness class or a factory). ``StreamHarness`` implements the protocol once
for every streaming simulator (OKX, Ripio): they share the small ``StreamSimulator`` protocol.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from bridge.contract.parsing import ParseResult
from bridge.ingest.plugins import registered

if TYPE_CHECKING:
    from bridge.service.app import BridgeApp

__all__ = [
    "Capability",
    "CAPABILITIES",
    "GapState",
    "ParserEntry",
    "ProviderHarness",
    "StreamHarness",
    "StreamSimulator",
    "SimulatedTransfer",
    "harness_for",
    "harness_names",
    "eventually",
    "leaked",
]

Capability = Literal["backfill", "poll", "reconnect", "hangup", "config_error_pacing", "webhook_auth", "sender_retries"]
CAPABILITIES: frozenset[str] = frozenset(
    {"backfill", "poll", "reconnect", "hangup", "config_error_pacing", "webhook_auth", "sender_retries"}
)
"""
* ``backfill``: the source reads the provider's history after a reconnect and on an interval;
* ``poll``: the source reads the provider's history every interval (no push channel); a cycle that
  fails or raises leaves the cursor where it was, so a later cycle reads what it missed (``gap``:
  the account's next requests fail);
* ``reconnect``: the source keeps a connection and reconnects with backoff when it drops;
* ``hangup``: the simulator can hang up right after every open and reports connection attempts;
* ``config_error_pacing``: refused credentials are a configuration error retried at a slow pace;
* ``webhook_auth``: deliveries are signed; a wrong signature is answered 401;
* ``sender_retries``: the provider retries a delivery that was not acknowledged.
"""


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0, what: str = "condition") -> None:
    """Wait until ``condition`` (a function, sync or async) holds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


def leaked(secrets: set[str], text: str, window: int = 10) -> set[str]:
    """Secrets of which any ``window`` characters in a row appear in ``text`` (a truncated dump
    leaks a prefix or a suffix, not the whole); shorter secrets count whole."""
    found = set()
    for secret in secrets:
        if len(secret) < window:
            if secret and secret in text:
                found.add(secret)
        elif any(secret[i : i + window] in text for i in range(len(secret) - window + 1)):
            found.add(secret)
    return found


@dataclass(frozen=True)
class GapState:
    """One state the source missed the first time (``gap``): its key and its truth value;
    ``attempts`` are the HTTP statuses of a webhook delivery's attempts (0 = no answer)."""

    key: str
    state: Hashable
    attempts: tuple[int, ...] = ()


@dataclass(frozen=True)
class ParserEntry:
    """One pure parse entry point of a provider, for the shared parser properties.

    ``parse`` takes one decoded JSON value (what the transport hands the parser) and returns the
    items under the parser contract of ``bridge.contract.parsing``: it never raises (input that is
    not its kind of message at all is one ``refusal``). ``samples`` are valid inputs from the
    simulator, the seeds the properties bend. ``amount``/``fee`` find what the provider sent in an
    event's ``raw``. ``readers`` decode bytes the way the transport does; ``floats`` says whether
    one of them yields binary floats; ``objects_only``: values that are not JSON objects never
    reach this parser (the adapter dead-letters them).
    """

    name: str
    parse: Callable[[Any], Sequence[ParseResult]]
    samples: tuple[Any, ...]
    amount: Callable[[Any], Any]
    fee: Callable[[Any], Any] | None = None
    readers: tuple[Callable[[bytes], Any], ...] = ()
    floats: bool = False
    objects_only: bool = True


class ProviderHarness(ABC):
    """What the conformance suite drives; one per provider, wrapping its simulator."""

    name: ClassVar[str]
    """The plugin (configuration section) name."""
    kind: ClassVar[Literal["stream", "webhook", "poll"]]
    capabilities: ClassVar[frozenset[str]]
    parse_target: ClassVar[tuple[str, str]]
    """(module, attribute) of the provider's parse function the source calls."""

    # -- lifecycle -----------------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Start the simulator (servers on loopback, any free port)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop the simulator."""

    async def __aenter__(self) -> ProviderHarness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- configuration -------------------------------------------------------------------------

    @abstractmethod
    def section(self, **overrides: Any) -> dict[str, Any]:
        """The provider's configuration section, enabled and pointing at the simulator."""

    @abstractmethod
    def wrong_secret_section(self, **overrides: Any) -> dict[str, Any]:
        """Like ``section``, but the credentials of ``source_name`` are not the simulator's."""

    @property
    @abstractmethod
    def source_name(self) -> str:
        """The service's source the scripted transfers flow through."""

    @abstractmethod
    async def ready(self, app: BridgeApp) -> None:
        """Wait until the running service's source is connected and subscribed (or serving)."""

    # -- scripted transfers --------------------------------------------------------------------

    @abstractmethod
    def create(self, count: int) -> list[Any]:
        """``count`` new transfers (each with at least two states), cycling through the
        provider's lifecycles; nothing is sent yet."""

    @abstractmethod
    async def advance(self, transfer: Any) -> None:
        """Move one transfer to its next state and send it (returns once it was sent, or — for a
        webhook — acknowledged)."""

    @abstractmethod
    async def run_lifecycles(self, transfers: Sequence[Any], *, repeat_every: int = 0, faults: bool = False, timeout: float = 30.0) -> None:
        """Drive every transfer to the end of its lifecycle; every ``repeat_every`` steps the state
        just sent is sent again. ``faults``: connections are dropped mid-lifecycle (stream), or
        answers are lost and deliveries repeated (webhook)."""

    @abstractmethod
    async def repeat(self, transfer: Any, times: int = 1) -> None:
        """Send the transfer's current state again, identical, ``times`` times."""

    @abstractmethod
    async def gap(self, transfers: Sequence[Any]) -> list[GapState]:
        """Advance every transfer by one state that the source misses the first time; returns
        those states. The provider's recovery (backfill, the sender's retries) must close it."""

    @abstractmethod
    async def send_not_json(self) -> bytes:
        """Send one payload that is not JSON to the source; returns its raw bytes."""

    @abstractmethod
    def truth(self) -> dict[str, list[Hashable]]:
        """Every state each transfer went through so far, in order, by event key."""

    @abstractmethod
    def state_of(self, event: Mapping[str, Any]) -> Hashable:
        """The truth value of a published event (a Kafka record's JSON value)."""

    def acknowledged(self) -> dict[str, list[Hashable]]:
        """States the provider was told are stored (webhook 2xx). A stream acknowledges nothing
        upstream: empty."""
        return {}

    @abstractmethod
    def secrets(self) -> set[str]:
        """Every secret that exists so far: credentials (also wrong ones), signatures, tickets."""

    # -- capabilities --------------------------------------------------------------------------

    def hang_up_after_open(self) -> None:
        """``hangup``: from now on the venue closes every connection right after it is opened."""
        raise NotImplementedError(f"{self.name} has no 'hangup' capability")

    def attempts(self) -> list[float]:
        """``hangup`` / ``config_error_pacing``: monotonic times of ``source_name``'s connection
        attempts (logins, tickets) the simulator saw."""
        raise NotImplementedError(f"{self.name} does not report connection attempts")

    async def post_state(self, transfer: Any) -> int:
        """``webhook_auth``: one delivery of the transfer's next state, no retry; its HTTP status."""
        raise NotImplementedError(f"{self.name} has no 'webhook_auth' capability")

    # -- parsers -------------------------------------------------------------------------------

    @abstractmethod
    def parsers(self) -> list[ParserEntry]:
        """The provider's pure parse entry points (usable without ``start``)."""


# -- streams ---------------------------------------------------------------------------------------


class SimulatedTransfer(Protocol):
    """What the stream simulators' transfers share."""

    @property
    def key(self) -> str: ...

    @property
    def observed(self) -> bool: ...

    history: list[Any]


class StreamSimulator(Protocol):
    """The small protocol every stream simulator (OKX, Ripio) offers the conformance suite."""

    close_on_subscribe: bool

    @property
    def accounts(self) -> Mapping[str, Any]: ...

    @property
    def ws_url(self) -> str: ...

    @property
    def rest_url(self) -> str: ...

    async def start(self) -> Any: ...

    async def stop(self) -> None: ...

    def create(self, script: str, account: str = ...) -> Any: ...

    async def advance(self, transfer: Any) -> bool: ...

    async def push_again(self, transfer: Any) -> int: ...

    async def send_raw(self, text: str, account: str | None = None) -> int: ...

    def drop(self, account: str | None = None) -> int: ...

    async def wait_subscribed(self, *accounts: str, timeout: float = 10.0) -> None: ...

    async def run_lifecycles(
        self,
        transfers: Sequence[Any],
        *,
        repeat_every: int = 0,
        drop_every: int = 0,
        drop_accounts: Sequence[str] | None = None,
        timeout: float = 60.0,
    ) -> int: ...

    def truth(self) -> dict[str, list[Any]]: ...


class StreamHarness(ProviderHarness):
    """The protocol over a ``StreamSimulator``: one account's connection, its history, its faults.

    A provider supplies its simulator (``sim``, started by ``start``), its accounts as section
    entries (``account_entry``), the rest of its section (``settings``), its lifecycles
    (``scripts``), a frame that is not JSON (``garbage``), and what is its own: ``attempts``,
    ``secrets``, ``state_of``, ``parsers``.
    """

    kind = "stream"
    capabilities = frozenset({"backfill", "reconnect", "hangup", "config_error_pacing"})
    account: ClassVar[str] = "main"
    other_account: ClassVar[str]
    """A second, healthy account of ``wrong_secret_section`` (other accounts keep flowing)."""
    scripts: ClassVar[tuple[str, ...]]
    garbage: ClassVar[str]
    wrong_secret: ClassVar[str]
    drop_every: ClassVar[int] = 3

    sim: StreamSimulator

    @abstractmethod
    def account_entry(self, name: str, *, wrong_secret: bool = False) -> dict[str, Any]:
        """The section's entry of one simulator account (credentials as plain strings)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The section without its accounts: URLs and intervals shrunk for tests."""

    async def start(self) -> None:
        await self.sim.start()

    async def stop(self) -> None:
        await self.sim.stop()

    def section(self, **overrides: Any) -> dict[str, Any]:
        return {"enabled": True, **self.settings(), "accounts": [self.account_entry(self.account)], **overrides}

    def wrong_secret_section(self, **overrides: Any) -> dict[str, Any]:
        accounts = [self.account_entry(self.account, wrong_secret=True), self.account_entry(self.other_account)]
        return {"enabled": True, **self.settings(), "accounts": accounts, **overrides}

    @property
    def source_name(self) -> str:
        return f"{self.name}:{self.account}"

    async def ready(self, app: BridgeApp) -> None:
        await self.sim.wait_subscribed(self.account)

    def create(self, count: int) -> list[Any]:
        return [self.sim.create(self.scripts[i % len(self.scripts)], self.account) for i in range(count)]

    async def advance(self, transfer: Any) -> None:
        if not await self.sim.advance(transfer):
            raise AssertionError(f"{transfer.key} has no further state")

    async def run_lifecycles(self, transfers: Sequence[Any], *, repeat_every: int = 0, faults: bool = False, timeout: float = 30.0) -> None:
        await self.sim.run_lifecycles(
            transfers,
            repeat_every=repeat_every,
            drop_every=self.drop_every if faults else 0,
            drop_accounts=[self.account],
            timeout=timeout,
        )

    async def repeat(self, transfer: Any, times: int = 1) -> None:
        for _ in range(times):
            if await self.sim.push_again(transfer) < 1:
                raise AssertionError(f"nobody received the repeat of {transfer.key}")

    async def gap(self, transfers: Sequence[Any]) -> list[GapState]:
        self.sim.drop(self.account)  # the account's connection is gone from this moment
        for transfer in transfers:
            await self.advance(transfer)
        missed = [t.key for t in transfers if t.observed]
        if missed:
            raise AssertionError(f"the source reconnected before the gap was made: {missed}")
        return [GapState(t.key, t.history[-1]) for t in transfers]

    async def send_not_json(self) -> bytes:
        if await self.sim.send_raw(self.garbage, self.account) < 1:
            raise AssertionError("no subscribed connection received the frame")
        return self.garbage.encode()

    def truth(self) -> dict[str, list[Hashable]]:
        return {key: list(states) for key, states in self.sim.truth().items()}

    def hang_up_after_open(self) -> None:
        self.sim.close_on_subscribe = True


# -- discovery -------------------------------------------------------------------------------------


def _module_name(plugin_name: str) -> str:
    return f"bridge_testkit.{plugin_name}.harness"


def has_harness(plugin_name: str) -> bool:
    try:
        return importlib.util.find_spec(_module_name(plugin_name)) is not None
    except ModuleNotFoundError:  # no bridge_testkit.<name> package at all
        return False


def harness_names() -> list[str]:
    """Registered providers that ship a harness, in the registry's order."""
    return [plugin.name for plugin in registered() if has_harness(plugin.name)]


def harness_for(plugin_name: str) -> ProviderHarness:
    """A fresh (not started) harness of ``plugin_name`` from ``bridge_testkit.<name>.harness``:
    its ``HARNESS`` (a ``ProviderHarness`` class or a factory), else its ``harness()`` factory."""
    module = importlib.import_module(_module_name(plugin_name))
    factory = getattr(module, "HARNESS", None) or getattr(module, "harness", None)
    if factory is None:
        raise LookupError(f"{module.__name__} exports neither HARNESS nor harness()")
    made = factory()
    if not isinstance(made, ProviderHarness):
        raise TypeError(f"{module.__name__}.HARNESS made a {type(made).__name__}, not a ProviderHarness")
    if made.name != plugin_name:
        raise ValueError(f"{module.__name__} is the harness of {made.name!r}, not {plugin_name!r}")
    unknown = made.capabilities - CAPABILITIES
    if unknown:
        raise ValueError(f"{module.__name__}: unknown capabilities {sorted(unknown)}")
    return made
