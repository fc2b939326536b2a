"""A faithful loopback peer of Ripio Trade for tests, the demo and benchmarks.

REST and the stream on 127.0.0.1 (port 0 = any free port), following
``shared/providers/ripio-websocket-deposit.md`` and NOTES:

* every REST call is checked like Ripio does: known ``Authorization`` token, ``Timestamp`` within
  ``Timestamp-tolerance`` (default 5000 ms, at most 60000), then the HMAC ``Signature`` over
  ``Timestamp + METHOD + path + body``; refusals answer ``{"error_code": 40100, …}`` with HTTP 401;
  too many requests answer HTTP 429 ``{"message": "Too many requests"}``;
* ``POST /trade/ticket`` issues tickets that expire (``ticket_ttl``) and work once;
* the stream takes ``{"method":"subscribe","topics":[…],"ticket":…}``: a bad ticket gets an error
  envelope and a close (1008); a good one a welcome message (``id: -1``) per topic; ``{"method":
  "ping"}`` gets ``{"method":"pong"}``; message ids count per topic and connection;
* scripted lifecycles (pending → confirmed / failed, fiat and crypto, deposits and withdrawals,
  identical repeats), skipped ids (the message is lost, its id used) and dropped connections;
* ``GET /trade/deposits`` and the withdrawals listing serve the same transfers, newest first,
  filtered by ``start_date`` (creation), ``currency_code`` and ``status``, in pages with a cursor
  (``nc`` → ``c``) and the placeholder ``pagination`` object.

Ground truth: every ``SimTransfer`` keeps the states it went through (``truth()``) and whether a
client could have seen its current state (a message sent on a live subscription, or a listing
response). ``run_lifecycles`` never advances a transfer whose state nobody saw — real transfers
change state minutes apart, far slower than a reconnect plus backfill — so a bridge that loses
nothing publishes every generated state.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import json
import logging
import random
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bridge.contract.jsonutil import dumps
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.auth import DEFAULT_TOLERANCE_MS, MAX_TOLERANCE_MS, prehash, sign, signed_path
from bridge.sources.ripio.config import DEPOSITS_PATH, TICKET_PATH, WITHDRAWALS_PATH, RipioAccount, RipioConfig

__all__ = [
    "SimAccount",
    "Step",
    "Snapshot",
    "SimTransfer",
    "RipioSimulator",
    "SCRIPTS",
    "default_accounts",
    "AMOUNTS",
]

log = logging.getLogger(__name__)
_WIRE_LOG = logging.getLogger("bridge_testkit.ripio.simulator.wire")
_WIRE_LOG.setLevel(logging.INFO)  # frame dumps would show the tickets the bridge sends

_BAD_TICKET_CLOSE = 1008


# -- accounts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimAccount:
    """One API token of the simulated exchange and the user it belongs to."""

    name: str
    user_id: str
    api_token: str
    api_secret: str

    def __repr__(self) -> str:  # keep secrets out of test output
        return f"SimAccount(name={self.name!r}, user_id={self.user_id!r})"

    def ripio_account(self, **overrides: Any) -> RipioAccount:
        """The bridge-side configuration of this token (override e.g. ``api_secret`` to break it)."""
        values: dict[str, Any] = {
            "name": self.name,
            "api_token": self.api_token,
            "api_secret": self.api_secret,
            **overrides,
        }
        return RipioAccount(**values)


def default_accounts(seed: int = 7) -> list[SimAccount]:
    """Two users with random credentials."""
    rng = random.Random(seed)

    def hexa(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    return [
        SimAccount("main", str(uuid.UUID(hexa(32))).upper(), hexa(40), hexa(64)),
        SimAccount("second", str(uuid.UUID(hexa(32))).upper(), hexa(40), hexa(64)),
    ]


# -- transfers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    status: str
    repeat: int = 1


@dataclass(frozen=True)
class Snapshot:
    """What the contract's fingerprint sees of one state (amount and fee are fixed per transfer)."""

    status: str
    tx_hash: str | None


SCRIPTS: Mapping[str, tuple[str, str, tuple[Step, ...]]] = {
    "deposit-crypto": ("deposit", "crypto", (Step("pending"), Step("confirmed"))),
    "deposit-crypto-failed": ("deposit", "crypto", (Step("pending"), Step("failed"))),
    "deposit-crypto-repeats": ("deposit", "crypto", (Step("pending", repeat=2), Step("confirmed", repeat=3))),
    "deposit-fiat": ("deposit", "fiat", (Step("confirmed"),)),
    "deposit-fiat-pending": ("deposit", "fiat", (Step("pending"), Step("confirmed", repeat=2))),
    "withdrawal-crypto": ("withdrawal", "crypto", (Step("pending"), Step("confirmed"))),
    "withdrawal-failed": ("withdrawal", "crypto", (Step("pending"), Step("failed"))),
    "withdrawal-internal": ("withdrawal", "internal", (Step("pending"), Step("confirmed"))),
    "withdrawal-repeats": ("withdrawal", "crypto", (Step("pending", repeat=2), Step("confirmed", repeat=2))),
}
"""Lifecycles by name: topic, kind (crypto / fiat / internal) and states in order."""

AMOUNTS = (
    "0.1",
    "0.00000001",
    "1000",
    "2.5",
    "1234567890123456.78901234567891",  # 30 significant digits
    "0.300000000000000000000000000001",  # 0.1 + 0.2 would not survive a float either
)

_CRYPTO = (("BTC", "bitcoin"), ("ETH", "ethereum"), ("BCH", "bitcoincash"), ("USDT", "tron"))
_FIAT = ("BRL", "ARS")


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _parse_iso(value: str) -> int | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(eq=False)
class SimTransfer:
    script_name: str
    topic: str
    kind: str
    transfer_id: str
    owner: SimAccount
    script: tuple[Step, ...]
    base: dict[str, Any]
    created_ms: int
    index: int = -1
    updated_ms: int = 0
    history: list[Snapshot] = field(default_factory=list)
    changed_at: float = 0.0
    seen_by: set[str] = field(default_factory=set)
    served: bool = False

    @property
    def key(self) -> str:
        return f"ripio:{self.topic}:{self.transfer_id}"

    @property
    def started(self) -> bool:
        return self.index >= 0

    @property
    def finished(self) -> bool:
        return self.index == len(self.script) - 1

    @property
    def observed(self) -> bool:
        """Some client could have seen the current state."""
        return bool(self.seen_by) or self.served

    @property
    def step(self) -> Step:
        return self.script[self.index]

    def _hash(self) -> str | None:
        if self.kind != "crypto":
            return None
        if self.topic == "deposit":
            return self.base["_hash"]  # the deposit was seen on chain before it is pending
        return self.base["_hash"] if self.step.status == "confirmed" else None

    def body(self) -> dict[str, Any]:
        """The stream message body of the current state, field for field as Ripio documents it."""
        status = self.step.status
        body = {k: v for k, v in self.base.items() if not k.startswith("_")}
        body["status"] = status
        body["hash"] = self._hash()
        body["create_date"] = _iso(self.created_ms)
        body["update_date"] = _iso(self.updated_ms)
        if self.topic == "deposit":
            body["confirmation_date"] = _iso(self.updated_ms) if status == "confirmed" else None
        return body

    def row(self) -> dict[str, Any]:
        """The listing row of the current state (the listings' own field set: no ``user_id``;
        deposits without ``update_date`` and ``address``)."""
        body = self.body()
        body.pop("user_id", None)
        if self.topic == "deposit":
            body.pop("update_date", None)
            body.pop("address", None)
            body.update(tag=None, memo=None)
        else:
            body.update(link=None, miner_fee_type="standard", transaction_id=None, memo=None, tag=None)
        return body

    def snapshot(self) -> Snapshot:
        return Snapshot(self.step.status, self._hash())


# -- connections -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    conn_id: str
    last_traffic: float
    account: SimAccount | None = None
    topics: set[str] = field(default_factory=set)
    seq: Counter[str] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)
    closed: bool = False


@dataclass
class _Ticket:
    account: SimAccount
    expires_at: float
    used: bool = False


def _json(value: Any) -> str:
    return dumps(value).decode()


class RipioSimulator:
    def __init__(
        self,
        accounts: Sequence[SimAccount] | None = None,
        *,
        ticket_ttl: float = 30.0,
        idle_timeout: float | None = None,
        rest_rate_limit: float = 50.0,
        sign_query: bool = False,
        cursor_paging: bool = True,
        answer_pings: bool = True,
        clock: Callable[[], float] = time.time,
        seed: int = 1,
    ):
        self.accounts = {a.name: a for a in (accounts or default_accounts())}
        self._by_token = {a.api_token: a for a in self.accounts.values()}
        self.ticket_ttl = ticket_ttl
        self.idle_timeout = idle_timeout
        """Close (4000) a connection that sent nothing for this long; None = never."""
        self.rest_rate_limit = rest_rate_limit
        self.sign_query = sign_query
        self.cursor_paging = cursor_paging
        self.answer_pings = answer_pings
        self.reject_tickets = False
        """Refuse every ticket on subscribe (a stream that belongs to another environment)."""
        self.close_on_subscribe = False
        """Close (1011) right after every subscription: a venue that accepts and hangs up."""
        self.retry_after: float | None = None
        """Send ``Retry-After`` (seconds) with every HTTP 429 (Ripio documents none)."""
        self._clock = clock
        self._rng = random.Random(seed)
        self._conns: set[_Conn] = set()
        self._tickets: dict[str, _Ticket] = {}
        self.transfers: dict[str, SimTransfer] = {}
        self.stats: Counter[str] = Counter()
        self.ticket_requests: list[tuple[float, str, str]] = []
        """(monotonic time, account name or '?', result) per ``POST /trade/ticket``."""
        self.subscribe_attempts: list[tuple[float, str, str]] = []
        self.signatures_seen: set[str] = set()
        self.tickets_issued: set[str] = set()
        self._rest_calls: dict[str, deque[float]] = {}
        self._rest_failures: deque[int] = deque()
        self._last_ms = 0
        self._ws_server: Server | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ws_port = 0
        self.rest_port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, ws_port: int = 0, rest_port: int = 0) -> RipioSimulator:
        self._ws_server = await serve(self._handle, "127.0.0.1", ws_port, ping_interval=None, logger=_WIRE_LOG)
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]  # type: ignore[index]
        app = web.Application()
        app.router.add_post(TICKET_PATH, self._ticket)
        app.router.add_get(DEPOSITS_PATH, self._deposits)
        app.router.add_get(WITHDRAWALS_PATH, self._withdrawals)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", rest_port)
        await site.start()
        self.rest_port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> RipioSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def config(self, **overrides: Any) -> RipioConfig:
        """A bridge configuration pointing at this simulator, intervals shrunk for tests."""
        values: dict[str, Any] = dict(
            enabled=True,
            ws_url=self.ws_url,
            rest_url=self.rest_url,
            accounts=[account.ripio_account() for account in self.accounts.values()],
            sign_query=self.sign_query,
            ping_interval=5.0,
            subscribe_confirm_timeout=1.0,
            reconnect_initial=0.05,
            reconnect_max=1.0,
            min_uptime=1.0,
            backfill_interval=2.0,
            backfill_overlap=2.0,
            backfill_initial_lookback=60.0,
            backfill_retry=0.5,
            rest_rate_per_second=min(self.rest_rate_limit, 40.0),
        )
        values.update(overrides)
        return RipioConfig(**values)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- stream --------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws, secrets.token_hex(4), time.monotonic())
        self._conns.add(conn)
        self.stats["connections"] += 1
        try:
            while True:
                timeout = None
                if self.idle_timeout is not None:
                    timeout = self.idle_timeout - (time.monotonic() - conn.last_traffic)
                    if timeout <= 0:
                        self.stats["closed_idle"] += 1
                        conn.closed = True
                        await ws.close(4000, f"no data received in {self.idle_timeout:g}s")
                        return
                try:
                    async with asyncio.timeout(timeout):
                        message = await ws.recv()
                except TimeoutError:
                    continue
                conn.last_traffic = time.monotonic()
                await self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._conns.discard(conn)

    async def _send(self, conn: _Conn, text: str) -> bool:
        if conn.closed:
            return False
        try:
            await conn.ws.send(text)
        except ConnectionClosed:
            conn.closed = True
            return False
        return True

    async def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        method = request.get("method") if isinstance(request, dict) else None
        if method == "ping":
            self.stats["pings"] += 1
            if self.answer_pings:
                await self._send(conn, _json({"method": "pong"}))
        elif method == "subscribe":
            await self._subscribe(conn, request)  # type: ignore[arg-type]
        else:
            await self._send(conn, _json({"error_code": 40000, "message": "Invalid request", "data": None}))

    def _check_ticket(self, ticket: Any) -> tuple[SimAccount | None, str]:
        if not isinstance(ticket, str):
            return None, "Ticket is required"
        entry = self._tickets.get(ticket)
        if entry is None:
            return None, "Invalid ticket"
        if entry.used:
            return entry.account, "Ticket already used"
        entry.used = True
        if time.monotonic() > entry.expires_at:
            return entry.account, "Ticket expired"
        if self.reject_tickets:
            return entry.account, "Invalid ticket"
        return entry.account, ""

    async def _subscribe(self, conn: _Conn, request: dict[str, Any]) -> None:
        topics = request.get("topics")
        if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
            await self._send(conn, _json({"error_code": 40000, "message": "Invalid topics", "data": None}))
            return
        private = [t for t in topics if t in m.TOPICS]
        account, error = self._check_ticket(request.get("ticket")) if private else (conn.account, "")
        self.subscribe_attempts.append((time.monotonic(), account.name if account else "?", error or "ok"))
        if error:
            self.stats["subscribes_refused"] += 1
            await self._send(conn, _json({"error_code": 40100, "message": error, "data": None}))
            conn.closed = True
            self._spawn(conn.ws.close(_BAD_TICKET_CLOSE, "invalid ticket"))
            return
        conn.account = account
        self.stats["subscribes"] += 1
        for topic in private:
            conn.topics.add(topic)
            await self._send(conn, _json({"id": m.WELCOME_ID, "topic": topic, "timestamp": self._now_ms(), "body": {}}))
        if self.close_on_subscribe:
            conn.closed = True
            self._spawn(conn.ws.close(1011, "unexpected condition"))

    # -- REST ----------------------------------------------------------------------------------

    def fail_rest(self, times: int = 1, *, status: int = 500) -> None:
        """The next ``times`` authenticated calls fail with this HTTP status."""
        self._rest_failures.extend([status] * times)

    @staticmethod
    def _error(status: int, code: int | None, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        body: dict[str, Any] = {"message": message} if code is None else {"error_code": code, "message": message, "data": None}
        return web.Response(status=status, text=_json(body), content_type="application/json", headers=headers)

    async def _authenticate(self, request: web.Request) -> SimAccount | web.Response:
        headers = request.headers
        account = self._by_token.get(headers.get("Authorization", ""))
        if account is None:
            return self._error(401, 40100, "Not authorized")
        timestamp = headers.get("Timestamp", "")
        if not timestamp.isdigit():
            return self._error(401, 40100, "Invalid timestamp")
        tolerance_text = headers.get("Timestamp-tolerance")
        tolerance = DEFAULT_TOLERANCE_MS
        if tolerance_text is not None:
            if not tolerance_text.isdigit() or not 0 < int(tolerance_text) <= MAX_TOLERANCE_MS:
                return self._error(400, 40000, "Invalid Timestamp-tolerance")
            tolerance = int(tolerance_text)
        if abs(self._now_ms() - int(timestamp)) > tolerance:
            return self._error(401, 40100, "Request timestamp outside the tolerance")
        given = headers.get("Signature", "")
        self.signatures_seen.add(given)
        body = await request.text()
        path = signed_path(request.rel_url.raw_path, request.rel_url.raw_query_string, include_query=self.sign_query)
        expected = sign(account.api_secret, prehash(timestamp, request.method, path, body))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return self._error(401, 40100, "Invalid signature")
        if self._rate_limited(account):
            self.stats["rest_rate_limited"] += 1
            headers = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else None
            return self._error(429, None, "Too many requests", headers)
        if self._rest_failures:
            status = self._rest_failures.popleft()
            return self._error(status, 50000 if status >= 500 else 40000, "Internal server error")
        return account

    def _rate_limited(self, account: SimAccount) -> bool:
        calls = self._rest_calls.setdefault(account.name, deque())
        now = time.monotonic()
        while calls and now - calls[0] >= 1.0:
            calls.popleft()
        if len(calls) >= self.rest_rate_limit:
            return True
        calls.append(now)
        return False

    async def _ticket(self, request: web.Request) -> web.Response:
        self.stats["ticket_requests"] += 1
        account = await self._authenticate(request)
        if isinstance(account, web.Response):
            name = self._by_token.get(request.headers.get("Authorization", ""))
            self.ticket_requests.append((time.monotonic(), name.name if name else "?", f"http_{account.status}"))
            return account
        # Not from the seeded generator: with it, a ticket of one run could equal a transfer id of
        # another run with the same seed, and a test looking for leaked tickets in the logs found a
        # transfer id there. Tickets are secrets: random like Ripio's.
        ticket = str(uuid.uuid4()).upper()
        self._tickets[ticket] = _Ticket(account, time.monotonic() + self.ticket_ttl)
        self.tickets_issued.add(ticket)
        self.ticket_requests.append((time.monotonic(), account.name, "ok"))
        return web.Response(text=_json({"message": None, "data": {"ticket": ticket}}), content_type="application/json")

    async def _deposits(self, request: web.Request) -> web.Response:
        return await self._listing(request, "deposit")

    async def _withdrawals(self, request: web.Request) -> web.Response:
        return await self._listing(request, "withdrawal")

    @staticmethod
    def _cursor(transfer: SimTransfer) -> str:
        return base64.urlsafe_b64encode(f"{transfer.created_ms}:{transfer.transfer_id}".encode()).decode()

    async def _listing(self, request: web.Request, topic: str) -> web.Response:
        self.stats["rest_requests"] += 1
        account = await self._authenticate(request)
        if isinstance(account, web.Response):
            return account
        query = request.query
        try:
            page_size = int(query.get("page_size", "200"))
            current_page = int(query.get("current_page", "1"))
        except ValueError:
            return self._error(400, 40000, "Invalid parameters")
        if not 1 <= page_size <= 200 or current_page < 1:
            return self._error(400, 40000, "Invalid parameters")
        start_ms = _parse_iso(query["start_date"]) if "start_date" in query else self._now_ms() - 180 * 86_400_000
        if start_ms is None:
            return self._error(400, 40000, "Invalid start_date")
        rows = sorted(
            (
                t
                for t in self.transfers.values()
                if t.topic == topic
                and t.owner is account
                and t.started
                and t.created_ms >= start_ms
                and ("currency_code" not in query or t.base["currency_code"] == query["currency_code"])
                and ("status" not in query or t.step.status == query["status"])
            ),
            key=lambda t: (t.created_ms, t.transfer_id),
            reverse=True,
        )
        total = len(rows)
        if "c" in query:
            try:
                created, _, transfer_id = base64.urlsafe_b64decode(query["c"].encode()).decode().partition(":")
                after = (int(created), transfer_id)
            except ValueError:
                return self._error(400, 40000, "Invalid cursor")
            rows = [t for t in rows if (t.created_ms, t.transfer_id) < after]
        else:
            rows = rows[(current_page - 1) * page_size :]
        page = rows[:page_size]
        more = len(rows) > page_size
        for transfer in page:
            transfer.served = True
        self.stats["rest_rows"] += len(page)
        data = {
            m.LISTING_KEY[topic]: [t.row() for t in page],
            "pagination": {
                "current_page": current_page,
                "registers_count": total,
                "total_pages": max(1, -(-total // page_size)),
                "page_size": page_size,
            },
            "nc": self._cursor(page[-1]) if self.cursor_paging and more and page else None,
            "pc": None,
        }
        return web.Response(text=_json({"data": data, "error_code": None, "message": None}), content_type="application/json")

    # -- transfers -----------------------------------------------------------------------------

    def _next_ms(self) -> int:
        """Creation times strictly increase, so the listing order (and cursor) is exact."""
        self._last_ms = max(self._now_ms(), self._last_ms + 1)
        return self._last_ms

    def create(self, script: str, account: str = "main", *, amount: str | None = None) -> SimTransfer:
        """A new transfer of ``account`` following ``SCRIPTS[script]``; nothing is pushed yet."""
        topic, kind, steps = SCRIPTS[script]
        owner = self.accounts[account]
        transfer_id = str(uuid.UUID(int=self._rng.getrandbits(128))).upper()
        value = Decimal(amount or self._rng.choice(AMOUNTS))
        if kind == "fiat":
            currency, network = self._rng.choice(_FIAT), None
        else:
            currency, network = self._rng.choice(_CRYPTO)
        tx_hash = "0x" + "".join(self._rng.choice("0123456789abcdef") for _ in range(64))
        base: dict[str, Any] = {
            "id": transfer_id,
            "user_id": owner.user_id,
            "amount": value,
            "currency_code": currency,
            "is_internal": kind != "crypto",
            "network": network,
            "_hash": tx_hash,
        }
        if topic == "deposit":
            base["address"] = None if kind == "fiat" else self._address()
        else:
            base.update(
                fee=Decimal(self._rng.choice(["0", "0.0001", "0.00000001", "1.5"])),
                miner_fee=Decimal("0") if kind == "internal" else Decimal(self._rng.choice(["0.00001", "0.000021"])),
                destination_address=self._address(),
                external_id=f"ext-{transfer_id[:8].lower()}" if self._rng.random() < 0.5 else None,
            )
        transfer = SimTransfer(script, topic, kind, transfer_id, owner, steps, base, self._next_ms())
        self.transfers[transfer.key] = transfer
        return transfer

    def _address(self) -> str:
        return "".join(self._rng.choice("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz") for _ in range(34))

    def _viewers(self, transfer: SimTransfer) -> list[_Conn]:
        return [c for c in self._conns if not c.closed and c.account is transfer.owner and transfer.topic in c.topics]

    async def _push(self, transfer: SimTransfer, times: int = 1) -> int:
        """Send the current state to every live subscription of its owner; returns frames sent.
        A pending skip on a connection uses the id and loses the message (a gap)."""
        sent = 0
        body = transfer.body()
        for conn in self._viewers(transfer):
            for _ in range(times):
                conn.seq[transfer.topic] += 1
                if conn.skips[transfer.topic] > 0:
                    conn.skips[transfer.topic] -= 1
                    self.stats["skipped"] += 1
                    continue
                frame = _json({"id": conn.seq[transfer.topic], "topic": transfer.topic, "timestamp": self._now_ms(), "body": body})
                if await self._send(conn, frame):
                    transfer.seen_by.add(conn.conn_id)
                    sent += 1
        self.stats["pushes"] += sent
        return sent

    async def advance(self, transfer: SimTransfer) -> bool:
        """Move to the next state of the script and push it; False at the end."""
        if transfer.finished:
            return False
        transfer.index += 1
        transfer.updated_ms = self._now_ms()
        transfer.changed_at = time.monotonic()
        transfer.seen_by.clear()
        transfer.served = False
        transfer.history.append(transfer.snapshot())
        self.stats["states"] += 1
        await self._push(transfer, transfer.step.repeat)
        if transfer.step.repeat > 1:
            self.stats["repeats"] += transfer.step.repeat - 1
        return True

    async def push_again(self, transfer: SimTransfer) -> int:
        """An identical repeat of the current state (Ripio sends "multiple notifications")."""
        if not transfer.started:
            return 0
        self.stats["repeats"] += 1
        return await self._push(transfer)

    async def send_raw(self, text: str, account: str | None = None) -> int:
        """Any frame to every subscribed connection (of ``account``): for malformed-message tests."""
        targets = [c for c in self._conns if c.topics and not c.closed and (account is None or (c.account and c.account.name == account))]
        for conn in targets:
            await self._send(conn, text)
        return len(targets)

    # -- faults --------------------------------------------------------------------------------

    def _targets(self, account: str | None) -> list[_Conn]:
        return [c for c in self._conns if not c.closed and c.account is not None and (account is None or c.account.name == account)]

    def skip_next(self, topic: str, count: int = 1, account: str | None = None) -> int:
        """The next ``count`` messages of ``topic`` on the live connections (of ``account``) are
        lost, their ids used: the client sees a jump."""
        targets = [c for c in self._targets(account) if topic in c.topics]
        for conn in targets:
            conn.skips[topic] += count
        return len(targets)

    def drop(self, account: str | None = None, *, code: int = 1011, reason: str = "simulated drop", abort: bool = False) -> int:
        """Close the connections of ``account`` (all when None) now; ``abort`` cuts TCP without a
        close frame, so messages still in flight may be lost (they count as unseen)."""
        targets = self._targets(account)
        for conn in targets:
            conn.closed = True
            if abort:
                conn.ws.transport.abort()
                for transfer in self.transfers.values():
                    transfer.seen_by.discard(conn.conn_id)
            else:
                self._spawn(conn.ws.close(code, reason))
        self.stats["drops"] += len(targets)
        return len(targets)

    # -- observation ---------------------------------------------------------------------------

    def subscribed(self, account: str, topics: Iterable[str] = ("deposit", "withdrawal")) -> bool:
        wanted = set(topics)
        return any(c.account is not None and c.account.name == account and not c.closed and wanted <= c.topics for c in self._conns)

    async def wait_subscribed(self, *accounts: str, timeout: float = 10.0) -> None:
        names = accounts or tuple(self.accounts)
        deadline = time.monotonic() + timeout
        while not all(self.subscribed(name) for name in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not subscribed within {timeout}s: {[n for n in names if not self.subscribed(n)]}")
            await asyncio.sleep(0.01)

    def ticket_attempts(self, account: str) -> list[float]:
        """Monotonic times of the ticket requests made with ``account``'s token."""
        return [at for at, name, _ in self.ticket_requests if name == account]

    def truth(self) -> dict[str, list[Snapshot]]:
        """Every state each transfer went through, in order: what Kafka must end up holding."""
        return {key: list(t.history) for key, t in self.transfers.items() if t.history}

    def unseen(self) -> list[SimTransfer]:
        return [t for t in self.transfers.values() if t.started and not t.observed]

    # -- scripted runs -------------------------------------------------------------------------

    def create_many(self, count: int, *, accounts: Iterable[str] | None = None, scripts: Sequence[str] | None = None) -> list[SimTransfer]:
        names = list(accounts or self.accounts)
        chosen = list(scripts or SCRIPTS)
        return [self.create(chosen[i % len(chosen)], names[(i // len(chosen)) % len(names)]) for i in range(count)]

    async def push_lifecycles(
        self, count: int, *, accounts: Iterable[str] | None = None, scripts: Sequence[str] | None = None, timeout: float = 600.0
    ) -> list[SimTransfer]:
        """For benchmarks: ``count`` new transfers driven through their scripts as fast as the
        subscribed clients read (each send waits while the socket's buffer is full)."""
        transfers = self.create_many(count, accounts=accounts, scripts=scripts)
        await self.run_lifecycles(transfers, min_step_interval=0.0, timeout=timeout)
        return transfers

    async def run_lifecycles(
        self,
        transfers: Sequence[SimTransfer],
        *,
        repeat_every: int = 0,
        skip_every: int = 0,
        drop_every: int = 0,
        drop_accounts: Sequence[str] | None = None,
        min_step_interval: float = 0.05,
        timeout: float = 60.0,
        on_step: Callable[[int], Any] | None = None,
    ) -> int:
        """Drive every transfer to the end of its script, round robin, as fast as the clients read.

        Every ``repeat_every`` steps the state just pushed is pushed again; every ``skip_every``
        steps the next message of that topic is lost with its id used (a gap); every
        ``drop_every`` steps a connection (cycling through ``drop_accounts``) is dropped
        mid-lifecycle — deferred until every account is subscribed again, so outages do not
        overlap. A transfer whose current state nobody saw waits (a backfill will serve it), and
        two states of one transfer are at least ``min_step_interval`` apart. Returns the steps taken.
        """
        active = deque(transfers)
        victims = itertools.cycle(drop_accounts or list(self.accounts))
        owners = {t.owner.name for t in transfers}
        steps = 0
        drop_due = False
        deadline = time.monotonic() + timeout
        while active:
            progressed = False
            for _ in range(len(active)):
                transfer = active.popleft()
                if transfer.started and not transfer.observed:
                    active.append(transfer)
                    continue
                if transfer.finished:
                    continue
                if transfer.started and time.monotonic() - transfer.changed_at < min_step_interval:
                    active.append(transfer)
                    continue
                if skip_every and steps and steps % skip_every == 0:
                    self.skip_next(transfer.topic, account=transfer.owner.name)
                await self.advance(transfer)
                steps += 1
                progressed = True
                if repeat_every and steps % repeat_every == 0:
                    await self.push_again(transfer)
                drop_due = drop_due or bool(drop_every and steps % drop_every == 0)
                if drop_due and all(self.subscribed(n) for n in owners):
                    self.drop(next(victims))
                    drop_due = False
                if on_step is not None:
                    on_step(steps)
                active.append(transfer)
                await asyncio.sleep(0)  # the bridge may share this event loop: let it read
            if not progressed:
                if time.monotonic() > deadline:
                    waiting = [t.key for t in active][:5]
                    raise TimeoutError(f"{len(active)} transfers not finished after {timeout}s, e.g. {waiting}")
                await asyncio.sleep(0.005)
        return steps
