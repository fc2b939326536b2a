"""A faithful loopback peer of OKX for tests, the demo and benchmarks.

WebSocket ``/ws/v5/business`` and the REST history endpoints on 127.0.0.1 (port 0 = any free
port), following ``shared/providers/okx-funding-websocket.md`` and NOTES:

* login checked like OKX does: known key, timestamp within the tolerance, passphrase, then the
  HMAC signature; failures answer ``{"event":"error","code":"6000x",…,"connId":…}`` and close 4001;
* no traffic for ``idle_timeout`` (30 s) → close 4004; text ``ping`` → ``pong``;
* subscriptions to ``deposit-info`` / ``withdrawal-info`` (optional ``ccy``) acknowledged per
  argument; errors 60011 / 60012 / 60013 / 60018 for the documented mistakes;
* a master key receives its sub-accounts' pushes; REST history only returns the key's own records,
  newest first, ``before``/``after`` on ``ts``, ``limit`` ≤ 100, signed, rate limited (50011/429);
* scripted lifecycles (masked addresses, ``addrEx`` null or set, internal transfers, states only the
  REST history shows), identical repeated pushes, dropped connections and notice 64008.

Ground truth: every ``SimTransfer`` keeps the list of states it went through (``truth()``), and
whether some client could have seen its current state (a push on a live connection, or a history
response to its owner). ``run_lifecycles`` never advances a transfer whose state nobody saw — real
transfers change state minutes apart, far slower than a reconnect plus backfill — so a bridge that
loses nothing publishes every generated state.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.sources.okx import messages as m
from bridge.sources.okx.auth import WS_VERIFY_PATH, prehash, sign
from bridge.sources.okx.config import OkxAccount
from bridge.sources.okx.parse import DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL

__all__ = [
    "SimAccount",
    "Step",
    "Snapshot",
    "SimTransfer",
    "OkxSimulator",
    "SCRIPTS",
    "PUSH_ONLY_SCRIPTS",
    "default_accounts",
]

log = logging.getLogger(__name__)
_WIRE_LOG = logging.getLogger("bridge_testkit.okx.simulator.wire")
_WIRE_LOG.setLevel(logging.INFO)  # frame dumps would show the login secrets the bridge sends

WS_PATH = "/ws/v5/business"
_NOTICE = {"event": "notice", "code": m.SERVICE_UPGRADE_NOTICE, "msg": "The connection will soon be closed for a service upgrade. Please reconnect."}


# -- accounts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimAccount:
    """One API key of the simulated exchange. ``master`` names the master of a sub-account."""

    name: str
    uid: str
    api_key: str
    secret_key: str
    passphrase: str
    sub_account: str | None = None
    master: str | None = None

    def __repr__(self) -> str:  # keep secrets out of test output
        return f"SimAccount(name={self.name!r}, uid={self.uid!r}, master={self.master!r})"

    def okx_account(self, **overrides: Any) -> OkxAccount:
        """The bridge-side configuration of this key (override e.g. ``secret_key`` to break it)."""
        values: dict[str, Any] = {
            "name": self.name,
            "api_key": self.api_key,
            "secret_key": self.secret_key,
            "passphrase": self.passphrase,
            **overrides,
        }
        return OkxAccount(**values)


def default_accounts(seed: int = 7) -> list[SimAccount]:
    """A master account and one sub-account, with random credentials."""
    rng = random.Random(seed)

    def key(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    master = SimAccount("main", "44711200000001", f"{key(8)}-{key(4)}-{key(4)}", key(32).upper(), f"Main-{key(6)}!")
    sub = SimAccount(
        "sub1", "44711200000002", f"{key(8)}-{key(4)}-{key(4)}", key(32).upper(), f"Sub-{key(6)}!", sub_account="sub-one", master="main"
    )
    return [master, sub]


# -- transfers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One state of a script. ``rest_only`` states are never pushed (deposit 17, withdrawal 19)."""

    state: str
    confirmations: int | None = None
    tx: bool = False
    rest_only: bool = False
    repeat: int = 1


@dataclass(frozen=True)
class Snapshot:
    """What the contract's fingerprint sees of one state (besides amount and fee, fixed here)."""

    state: str
    confirmations: int | None
    tx_hash: str | None


SCRIPTS: Mapping[str, tuple[str, tuple[Step, ...]]] = {
    "deposit": (DEPOSIT_CHANNEL, (Step("0", 0), Step("0", 6, repeat=2), Step("1", 12), Step("2", 20))),
    "deposit-travel-rule": (DEPOSIT_CHANNEL, (Step("0", 2), Step("17", 2, rest_only=True), Step("1", 12), Step("2", 20))),
    "deposit-suspended": (DEPOSIT_CHANNEL, (Step("0", 1), Step("8", 1), Step("1", 15), Step("2", 25))),
    "deposit-internal": (DEPOSIT_CHANNEL, (Step("1", 0), Step("2", 0, repeat=2))),
    "withdrawal": (
        WITHDRAWAL_CHANNEL,
        (Step("17"), Step("0"), Step("4"), Step("7"), Step("1", tx=True), Step("15", tx=True), Step("2", tx=True)),
    ),
    "withdrawal-hot-wallet": (
        WITHDRAWAL_CHANNEL,
        (Step("0"), Step("19", rest_only=True), Step("7"), Step("1", tx=True), Step("2", tx=True, repeat=2)),
    ),
    "withdrawal-failed": (WITHDRAWAL_CHANNEL, (Step("0"), Step("7"), Step("1", tx=True), Step("-1", tx=True))),
    "withdrawal-cancelled": (WITHDRAWAL_CHANNEL, (Step("10"), Step("0"), Step("-3"), Step("-2"))),
    "withdrawal-internal": (WITHDRAWAL_CHANNEL, (Step("10"), Step("0"), Step("7"), Step("2"))),
    "withdrawal-memo": (WITHDRAWAL_CHANNEL, (Step("0"), Step("5"), Step("7"), Step("1", tx=True), Step("16", tx=True), Step("2", tx=True))),
}
"""Lifecycles by name: the channel and the states in order (no state repeats a fingerprint)."""

PUSH_ONLY_SCRIPTS = tuple(name for name, (_, steps) in SCRIPTS.items() if not any(step.rest_only for step in steps))
"""Lifecycles a client sees completely without REST (for benchmarks that switch backfill off)."""


@dataclass(eq=False)
class SimTransfer:
    script_name: str
    channel: str
    transfer_id: str
    owner: SimAccount
    script: tuple[Step, ...]
    base: dict[str, Any]
    created_ms: int
    index: int = -1
    history: list[Snapshot] = field(default_factory=list)
    changed_at: float = 0.0
    seen_by: set[str] = field(default_factory=set)
    served: bool = False
    tx_hash: str = ""

    @property
    def key(self) -> str:
        direction = "deposit" if self.channel == DEPOSIT_CHANNEL else "withdrawal"
        return f"okx:{direction}:{self.transfer_id}"

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

    def item(self, p_time_ms: int) -> dict[str, Any]:
        """The push item of the current state, field for field as OKX documents it."""
        step = self.step
        item = dict(self.base)
        item["state"] = step.state
        item["pTime"] = str(p_time_ms)
        if self.channel == DEPOSIT_CHANNEL:
            item["actualDepBlkConfirm"] = str(step.confirmations or 0)
            if not item["fromWdId"]:
                item["txId"] = self.tx_hash
        else:
            item["txId"] = self.tx_hash if step.tx else ""
        return item

    def row(self) -> dict[str, Any]:
        """The history row of the current state: the push fields without ``pTime``, ``uid``, ``subAcct``."""
        row = self.item(0)
        for name in ("pTime", "uid", "subAcct"):
            row.pop(name, None)
        return row

    def snapshot(self) -> Snapshot:
        item = self.item(0)
        if self.channel == DEPOSIT_CHANNEL:
            return Snapshot(item["state"], int(item["actualDepBlkConfirm"]), item["txId"] or None)
        return Snapshot(item["state"], None, item["txId"] or None)


# -- connections -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    conn_id: str
    last_traffic: float
    account: SimAccount | None = None
    subs: dict[str, set[str | None]] = field(default_factory=dict)
    closed: bool = False

    def wants(self, channel: str, ccy: str) -> bool:
        wanted = self.subs.get(channel)
        return bool(wanted) and (None in wanted or ccy in wanted)  # type: ignore[operator]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _parse_iso_ms(value: str) -> float | None:
    try:
        if len(value) != 24 or not value.endswith("Z"):
            return None
        return datetime.fromisoformat(value[:-1] + "+00:00").timestamp()
    except ValueError:
        return None


class OkxSimulator:
    def __init__(
        self,
        accounts: Sequence[SimAccount] | None = None,
        *,
        idle_timeout: float = 30.0,
        timestamp_tolerance: float = 30.0,
        rest_rate_limit: float = 6.0,
        answer_pings: bool = True,
        clock: Callable[[], float] = time.time,
        seed: int = 1,
        first_ids: tuple[int, int] = (88165462, 63754560),
    ):
        """``first_ids``: the first deposit and withdrawal id handed out (the defaults are the ids of
        the OKX document's examples; move them to run beside those examples without sharing keys)."""
        self.accounts = {a.name: a for a in (accounts or default_accounts())}
        self._by_key = {a.api_key: a for a in self.accounts.values()}
        self.idle_timeout = idle_timeout
        self.timestamp_tolerance = timestamp_tolerance
        self.rest_rate_limit = rest_rate_limit
        self.answer_pings = answer_pings
        self.notice_on_subscribe = False
        """Send notice 64008 right after every subscription: a venue that never settles."""
        self.close_on_subscribe = False
        """Close (4006) right after every subscription: a venue that accepts and hangs up."""
        self._clock = clock
        self._rng = random.Random(seed)
        self._conns: set[_Conn] = set()
        self.transfers: dict[str, SimTransfer] = {}
        self.stats: Counter[str] = Counter()
        self.login_attempts: list[tuple[float, str, str]] = []
        """(monotonic time, account name or '?', error code or '0') per login request."""
        self.signatures_seen: set[str] = set()
        self._rest_calls: dict[tuple[str, str], deque[float]] = {}
        self._rest_failures: deque[tuple[int, str]] = deque()
        self._rest_failure_msg = "Service temporarily unavailable"
        self._last_ts = 0
        self._dep_ids = itertools.count(first_ids[0])
        self._wd_ids = itertools.count(first_ids[1])
        self._ws_server: Server | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ws_port = 0
        self.rest_port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, ws_port: int = 0, rest_port: int = 0) -> OkxSimulator:
        self._ws_server = await serve(
            self._handle,
            "127.0.0.1",
            ws_port,
            process_request=self._check_path,
            ping_interval=None,
            logger=_WIRE_LOG,
        )
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]  # type: ignore[index]
        app = web.Application()
        app.router.add_get(m.DEPOSIT_HISTORY_PATH, self._deposit_history)
        app.router.add_get(m.WITHDRAWAL_HISTORY_PATH, self._withdrawal_history)
        app.router.add_get(m.ACCOUNT_CONFIG_PATH, self._account_config)
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

    async def __aenter__(self) -> OkxSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- WebSocket -----------------------------------------------------------------------------

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] != WS_PATH:
            return connection.respond(404, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws, secrets.token_hex(4), time.monotonic())
        self._conns.add(conn)
        self.stats["connections"] += 1
        try:
            while True:
                remaining = self.idle_timeout - (time.monotonic() - conn.last_traffic)
                if remaining <= 0:
                    self.stats["closed_4004"] += 1
                    conn.closed = True
                    await ws.close(4004, f"No data received in {self.idle_timeout:g}s.")
                    return
                try:
                    async with asyncio.timeout(remaining):
                        message = await ws.recv()
                except TimeoutError:
                    continue  # a push may have counted as traffic meanwhile: check again
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
        conn.last_traffic = time.monotonic()
        return True

    async def _error(self, conn: _Conn, code: str, msg: str, request_id: str | None = None) -> None:
        body: dict[str, Any] = {"event": "error", "code": code, "msg": msg, "connId": conn.conn_id}
        if request_id is not None:
            body = {"id": request_id, **body}
        await self._send(conn, _json(body))

    async def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        if text == m.PING:
            self.stats["pings"] += 1
            if self.answer_pings:
                await self._send(conn, m.PONG)
            return
        try:
            request = json.loads(text)
        except ValueError:
            await self._error(conn, "60012", f"Invalid request: {text[:100]}")
            return
        if not isinstance(request, dict):
            await self._error(conn, "60012", f"Invalid request: {text[:100]}")
            return
        op = request.get("op")
        request_id = request.get("id") if isinstance(request.get("id"), str) else None
        if op == "login":
            await self._login(conn, request.get("args"))
        elif op in ("subscribe", "unsubscribe"):
            await self._subscribe(conn, op, request.get("args"), request_id, text)
        else:
            await self._error(conn, "60012", f"Invalid request: {text[:100]}", request_id)

    def _check_login(self, args: Any) -> tuple[SimAccount | None, str, str]:
        if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict)):
            return None, "60013", "Invalid args"
        arg = args[0]
        if not all(isinstance(arg.get(k), str) for k in ("apiKey", "passphrase", "timestamp", "sign")):
            return None, "60013", "Invalid args"
        self.signatures_seen.add(arg["sign"])
        account = self._by_key.get(arg["apiKey"])
        if account is None:
            return None, "60005", "Invalid apiKey"
        try:
            stamp = float(arg["timestamp"])
        except ValueError:
            return account, "60004", "Invalid timestamp"
        age = self._clock() - stamp
        if age > self.timestamp_tolerance:
            return account, "60006", "Timestamp request expired"
        if -age > self.timestamp_tolerance:
            return account, "60004", "Invalid timestamp"
        if not hmac.compare_digest(arg["passphrase"], account.passphrase):
            return account, "60024", "Wrong passphrase"
        expected = sign(account.secret_key, prehash(arg["timestamp"], "GET", WS_VERIFY_PATH))
        if not hmac.compare_digest(arg["sign"], expected):
            return account, "60007", "Invalid sign"
        return account, "0", ""

    async def _login(self, conn: _Conn, args: Any) -> None:
        account, code, msg = self._check_login(args)
        self.login_attempts.append((time.monotonic(), account.name if account else "?", code))
        if code != "0":
            self.stats["logins_failed"] += 1
            await self._error(conn, code, msg)
            conn.closed = True
            self._spawn(conn.ws.close(4001, "Login failed."))
            return
        self.stats["logins"] += 1
        conn.account = account
        await self._send(conn, _json({"event": "login", "code": "0", "msg": "", "connId": conn.conn_id}))

    async def _subscribe(self, conn: _Conn, op: str, args: Any, request_id: str | None, text: str) -> None:
        if conn.account is None:
            await self._error(conn, "60011", "Please log in", request_id)
            return
        if not isinstance(args, list) or not args:
            await self._error(conn, "60012", f"Invalid request: {text[:100]}", request_id)
            return
        parsed: list[tuple[str, str | None, dict[str, Any]]] = []
        for arg in args:
            if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
                await self._error(conn, "60013", "Invalid args", request_id)
                return
            ccy = arg.get("ccy")
            if ccy is not None and (not isinstance(ccy, str) or not ccy):
                await self._error(conn, "60013", "Invalid args", request_id)
                return
            if arg["channel"] not in m.CHANNELS:
                await self._error(conn, "60018", f"Wrong URL or channel:{arg['channel']}, instId or doesn't exist.", request_id)
                return
            parsed.append((arg["channel"], ccy, arg))
        for channel, ccy, arg in parsed:
            wanted = conn.subs.setdefault(channel, set())
            if op == "subscribe":
                wanted.add(ccy)
            else:
                wanted.discard(ccy)
            ack: dict[str, Any] = {"event": op, "arg": arg, "connId": conn.conn_id}
            if request_id is not None:
                ack = {"id": request_id, **ack}
            await self._send(conn, _json(ack))
            if op == "subscribe":
                count = sum(1 for c in self._conns if c.account is conn.account and channel in c.subs and not c.closed)
                await self._send(
                    conn, _json({"event": "channel-conn-count", "channel": channel, "connCount": str(count), "connId": conn.conn_id})
                )
        if op == "subscribe" and self.notice_on_subscribe:
            await self._send(conn, _json({**_NOTICE, "connId": conn.conn_id}))
            self.stats["notices"] += 1
        if op == "subscribe" and self.close_on_subscribe:
            conn.closed = True
            self._spawn(conn.ws.close(4006, "abnormal"))

    # -- REST ----------------------------------------------------------------------------------

    def fail_rest(self, times: int = 1, *, status: int = 500, code: str = "50001", msg: str = "Service temporarily unavailable") -> None:
        """The next ``times`` history calls fail with this status and code."""
        self._rest_failures.extend([(status, code)] * times)
        self._rest_failure_msg = msg

    @staticmethod
    def _rest_error(status: int, code: str, msg: str) -> web.Response:
        return web.Response(status=status, text=_json({"code": code, "msg": msg, "data": []}), content_type="application/json")

    def _rest_auth(self, request: web.Request) -> SimAccount | web.Response:
        headers = request.headers
        account = self._by_key.get(headers.get("OK-ACCESS-KEY", ""))
        if account is None:
            return self._rest_error(401, "50111", "Invalid OK-ACCESS-KEY")
        if not hmac.compare_digest(headers.get("OK-ACCESS-PASSPHRASE", ""), account.passphrase):
            return self._rest_error(401, "50105", "Invalid OK-ACCESS-PASSPHRASE")
        timestamp = headers.get("OK-ACCESS-TIMESTAMP", "")
        stamp = _parse_iso_ms(timestamp)
        if stamp is None:
            return self._rest_error(401, "50112", "Invalid OK-ACCESS-TIMESTAMP")
        if abs(self._clock() - stamp) > self.timestamp_tolerance:
            return self._rest_error(401, "50102", "Timestamp request expired")
        given = headers.get("OK-ACCESS-SIGN", "")
        self.signatures_seen.add(given)
        expected = sign(account.secret_key, prehash(timestamp, request.method, request.raw_path, ""))
        if not hmac.compare_digest(given, expected):
            return self._rest_error(401, "50113", "Invalid Sign")
        return account

    def _rate_limited(self, account: SimAccount, path: str) -> bool:
        calls = self._rest_calls.setdefault((account.name, path), deque())
        now = time.monotonic()
        while calls and now - calls[0] >= 1.0:
            calls.popleft()
        if len(calls) >= self.rest_rate_limit:
            return True
        calls.append(now)
        return False

    async def _deposit_history(self, request: web.Request) -> web.Response:
        return self._history(request, DEPOSIT_CHANNEL)

    async def _withdrawal_history(self, request: web.Request) -> web.Response:
        return self._history(request, WITHDRAWAL_CHANNEL)

    def _history(self, request: web.Request, channel: str) -> web.Response:
        self.stats["rest_requests"] += 1
        account = self._rest_auth(request)
        if isinstance(account, web.Response):
            return account
        if self._rate_limited(account, request.path):
            self.stats["rest_rate_limited"] += 1
            return self._rest_error(429, "50011", "Rate limit reached. Please refer to API documentation and throttle requests accordingly.")
        if self._rest_failures:
            status, code = self._rest_failures.popleft()
            return self._rest_error(status, code, self._rest_failure_msg)
        query = request.query
        try:
            limit = int(query.get("limit", "100"))
            after = int(query["after"]) if "after" in query else None
            before = int(query["before"]) if "before" in query else None
        except ValueError:
            return self._rest_error(400, "51000", "Parameter error")
        if not 1 <= limit <= 100:
            return self._rest_error(400, "51000", "Parameter limit error")
        id_field = m.HISTORY_ID_FIELD[channel]
        rows = [
            t
            for t in self.transfers.values()
            if t.channel == channel
            and t.owner is account
            and t.started
            and (after is None or t.created_ms < after)
            and (before is None or t.created_ms > before)
            and ("ccy" not in query or t.base["ccy"] == query["ccy"])
            and (id_field not in query or t.transfer_id == query[id_field])
            and ("state" not in query or t.step.state == query["state"])
        ]
        rows.sort(key=lambda t: (t.created_ms, int(t.transfer_id)), reverse=True)
        page = rows[:limit]
        for transfer in page:
            transfer.served = True
        self.stats["rest_rows"] += len(page)
        return web.Response(text=_json({"code": "0", "msg": "", "data": [t.row() for t in page]}), content_type="application/json")

    async def _account_config(self, request: web.Request) -> web.Response:
        account = self._rest_auth(request)
        if isinstance(account, web.Response):
            return account
        main = self.accounts.get(account.master or "") or account
        data = {"uid": account.uid, "mainUid": main.uid, "acctLv": "1", "label": account.name, "perm": "read_only", "level": "Lv1"}
        return web.Response(text=_json({"code": "0", "msg": "", "data": [data]}), content_type="application/json")

    # -- transfers -----------------------------------------------------------------------------

    def _next_ts(self) -> int:
        """Creation times strictly increase, as OKX's history paging by ``ts`` needs to be exact."""
        self._last_ts = max(int(self._clock() * 1000), self._last_ts + 1)
        return self._last_ts

    def _amount(self) -> str:
        whole = self._rng.choice(["0", "1", "25", "1000", "98765432109876543210"])
        digits = self._rng.randint(0, 8)
        frac = "".join(self._rng.choice("0123456789") for _ in range(digits)).rstrip("0")
        return f"{whole}.{frac}" if frac else (whole if whole != "0" else "0.00000001")

    def _address(self, prefix: str) -> str:
        body = "".join(self._rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789") for _ in range(20))
        return f"{prefix}{body[:9]}*****{body[9:]}"  # OKX masks the middle of addresses

    def create(self, script: str, account: str = "main", *, ccy: str | None = None) -> SimTransfer:
        """A new transfer of ``account`` following ``SCRIPTS[script]``; nothing is pushed yet."""
        channel, steps = SCRIPTS[script]
        owner = self.accounts[account]
        internal = script.endswith("-internal")
        memo = script.endswith("-memo")
        coin = ccy or ("TON" if memo else self._rng.choice(["USDT", "BTC", "ETH"]))
        chain = {"USDT": "USDT-TRC20", "BTC": "BTC-Bitcoin", "ETH": "ETH-ERC20", "TON": "TON-TON"}.get(coin, f"{coin}-{coin}")
        created = self._next_ts()
        common = {"amt": self._amount(), "ccy": coin, "chain": chain, "ts": str(created), "uid": owner.uid, "subAcct": owner.sub_account or ""}
        if channel == DEPOSIT_CHANNEL:
            transfer_id = str(next(self._dep_ids))
            base = {
                **common,
                "actualDepBlkConfirm": "0",
                "areaCodeFrom": "86" if internal else "",
                "depId": transfer_id,
                "from": "156****6789" if internal else "",
                "fromWdId": str(next(self._wd_ids)) if internal else "",
                "to": self._address("T"),
                "txId": "",
            }
        else:
            transfer_id = str(next(self._wd_ids))
            base = {
                **common,
                "addrEx": {"comment": str(self._rng.randint(100000, 999999))} if memo else None,
                "areaCodeFrom": "",
                "areaCodeTo": "",
                "clientId": f"cl-{transfer_id}" if self._rng.random() < 0.5 else "",
                "fee": self._rng.choice(["0.8", "0.0002", "0.00000001", "1"]),
                "feeCcy": coin,
                "from": "",
                "memo": "",
                "nonTradableAsset": False,
                "note": "",
                "pmtId": "",
                "tag": "",
                "to": "44711200000777" if internal else self._address("TN8"),
                "toAddrType": "2" if internal else "1",
                "txId": "",
                "wdId": transfer_id,
            }
        transfer = SimTransfer(script, channel, transfer_id, owner, steps, base, created, tx_hash=secrets.token_hex(32))
        self.transfers[transfer.key] = transfer
        return transfer

    def _viewers(self, transfer: SimTransfer) -> list[_Conn]:
        owners = {transfer.owner.name, transfer.owner.master}
        ccy = transfer.base["ccy"]
        return [
            c for c in self._conns
            if not c.closed and c.account is not None and c.account.name in owners and c.wants(transfer.channel, ccy)
        ]

    async def _push(self, transfer: SimTransfer, times: int = 1) -> int:
        """Send the current state to every live subscriber that may see it; returns the frames sent."""
        sent = 0
        for conn in self._viewers(transfer):
            assert conn.account is not None
            frame = _json({"arg": {"channel": transfer.channel, "uid": conn.account.uid}, "data": [transfer.item(self._next_p_time())]})
            for _ in range(times):
                if await self._send(conn, frame):
                    transfer.seen_by.add(conn.conn_id)
                    sent += 1
        self.stats["pushes"] += sent
        return sent

    def _next_p_time(self) -> int:
        return int(self._clock() * 1000)

    async def advance(self, transfer: SimTransfer) -> bool:
        """Move to the next state of the script and push it (unless REST-only); False at the end."""
        if transfer.finished:
            return False
        transfer.index += 1
        transfer.changed_at = time.monotonic()
        transfer.seen_by.clear()
        transfer.served = False
        transfer.history.append(transfer.snapshot())
        self.stats["states"] += 1
        if not transfer.step.rest_only:
            await self._push(transfer, transfer.step.repeat)
            if transfer.step.repeat > 1:
                self.stats["repeats"] += transfer.step.repeat - 1
        return True

    async def push_again(self, transfer: SimTransfer) -> int:
        """An identical repeat of the current state (OKX does not promise to push a state once)."""
        if not transfer.started or transfer.step.rest_only:
            return 0
        self.stats["repeats"] += 1
        return await self._push(transfer)

    async def send_raw(self, text: str, account: str | None = None) -> int:
        """Any frame to every subscribed connection (of ``account``): for malformed-push tests."""
        targets = [c for c in self._conns if c.subs and not c.closed and (account is None or (c.account and c.account.name == account))]
        for conn in targets:
            await self._send(conn, text)
        return len(targets)

    # -- faults --------------------------------------------------------------------------------

    def _targets(self, account: str | None) -> list[_Conn]:
        return [c for c in self._conns if not c.closed and c.account is not None and (account is None or c.account.name == account)]

    def drop(self, account: str | None = None, *, code: int = 1011, reason: str = "simulated drop", abort: bool = False) -> int:
        """Close the connections of ``account`` (all when None) now; ``abort`` cuts TCP without a
        close frame, so pushes still in flight may be lost (they count as unseen)."""
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

    async def notice(self, account: str | None = None, *, close_after: float | None = None) -> int:
        """Notice 64008 (service upgrade), then close after ``close_after`` seconds if given."""
        targets = self._targets(account)
        for conn in targets:
            await self._send(conn, _json({**_NOTICE, "connId": conn.conn_id}))
            if close_after is not None:
                self._spawn(self._close_later(conn, close_after))
        self.stats["notices"] += len(targets)
        return len(targets)

    async def _close_later(self, conn: _Conn, delay: float) -> None:
        await asyncio.sleep(delay)
        conn.closed = True
        await conn.ws.close(1012, "service restart")

    # -- observation ---------------------------------------------------------------------------

    def subscribed(self, account: str) -> bool:
        return any(
            c.account is not None and c.account.name == account and not c.closed and all(c.subs.get(ch) for ch in m.CHANNELS)
            for c in self._conns
        )

    async def wait_subscribed(self, *accounts: str, timeout: float = 10.0) -> None:
        names = accounts or tuple(self.accounts)
        deadline = time.monotonic() + timeout
        while not all(self.subscribed(name) for name in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not subscribed within {timeout}s: {[n for n in names if not self.subscribed(n)]}")
            await asyncio.sleep(0.01)

    def attempts(self, account: str) -> list[float]:
        """Monotonic times of the login attempts made with ``account``'s key."""
        return [at for at, name, _ in self.login_attempts if name == account]

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
        transfers = self.create_many(count, accounts=accounts, scripts=scripts or PUSH_ONLY_SCRIPTS)
        await self.run_lifecycles(transfers, min_step_interval=0.0, timeout=timeout)
        return transfers

    async def run_lifecycles(
        self,
        transfers: Sequence[SimTransfer],
        *,
        repeat_every: int = 0,
        drop_every: int = 0,
        drop_accounts: Sequence[str] | None = None,
        notice_every: int = 0,
        min_step_interval: float = 0.05,
        timeout: float = 60.0,
        on_step: Callable[[int], Any] | None = None,
    ) -> int:
        """Drive every transfer to the end of its script, round robin, as fast as the clients read.

        Every ``repeat_every`` steps the state just pushed is pushed again; every ``drop_every`` steps
        a connection (cycling through ``drop_accounts``) is dropped mid-lifecycle — deferred until
        every logged-in account is subscribed again, so outages do not overlap; every
        ``notice_every`` steps a 64008 notice goes out. A transfer whose current state nobody saw
        waits (its owner's backfill will serve it), and two states of one transfer are at least
        ``min_step_interval`` apart (at OKX they are seconds to minutes apart). Returns the number
        of steps taken.
        """
        active = deque(transfers)
        victims = itertools.cycle(drop_accounts or list(self.accounts))
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
                await self.advance(transfer)
                steps += 1
                progressed = True
                if repeat_every and steps % repeat_every == 0:
                    await self.push_again(transfer)
                drop_due = drop_due or bool(drop_every and steps % drop_every == 0)
                if drop_due and all(self.subscribed(n) for n in self._connected_names()):
                    self.drop(next(victims))
                    drop_due = False
                if notice_every and steps % notice_every == 0:
                    await self.notice(next(victims))
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

    def _connected_names(self) -> set[str]:
        """Accounts some client has logged in with (the ones a drop can hit)."""
        return {name for _, name, code in self.login_attempts if code == "0"}
