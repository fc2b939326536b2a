"""A faithful loopback peer of Binance's capital history API, for tests, the demo and the scenario.

aiohttp on 127.0.0.1 (port 0 = any free port), following ``shared/providers/binance-capital-history.md``:

* ``GET /api/v3/time``; signed ``/api/v3/account``, ``/sapi/v1/capital/deposit/hisrec``,
  ``/sapi/v1/capital/withdraw/history``, (master keys) ``/sapi/v1/capital/deposit/subHisrec`` and
  ``/sapi/v1/localentity/withdraw/history`` (the withdrawals in its shape: ``withdrawalStatus``, ``trId``);
* requests checked in Binance's order, with its codes: a ban (418), the key (``X-MBX-APIKEY``:
  -2014 malformed, -2015 unknown or not allowed), mandatory ``timestamp``/``signature`` (-1102),
  ``recvWindow`` <= 60000 (-1131), ``timestamp`` within ``recvWindow`` and < 1 s ahead of the server
  clock (-1021), the signature over the percent-encoded query as received (-1022: HMAC hex, Ed25519
  and RSA base64, verified here with ``hmac`` and ``cryptography`` directly, not the bridge's code);
* weights per minute as Binance meters them (each SAPI endpoint its own budget, per IP or per
  UID; ``/api`` one IP budget), reported in ``X-SAPI-USED-<IP|UID>-WEIGHT-1M`` and
  ``X-MBX-USED-WEIGHT-1M``: over the limit → 429 -1003 with ``Retry-After``; a request while
  told to wait → 418 (a ban, ``Retry-After`` doubling): ``bans_earned`` counts those;
* windows: ``startTime``/``endTime`` on creation time, span < 90 days (-1127), ``limit`` <= 1000,
  ``idList`` <= 45, ``offset`` paging, unknown parameters refused (-1104); rows newest first;
* faults on demand (``fail``): 429/418 with ``Retry-After``, -1021, -1022, 5xx, a non-JSON body,
  a hang-up; a server clock ``skew_ms`` (the bridge must learn the offset, and relearn it on -1021).

Transfers (``lifecycles``) change in place; ``run_lifecycles`` advances a transfer only after an
answer carried its current state, so a bridge that loses nothing publishes every state.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.sources.binance import messages as m
from bridge_testkit.binance.lifecycles import SCRIPTS, SimAccount, SimTransfer, Snapshot, default_accounts, new_transfer

__all__ = ["BinanceSimulator", "Fault", "NOT_JSON"]

NOT_JSON = b'[{"id": "4011239999", "amount": "0.5", "coin": "BTC", "sta'
"""The body of the ``not_json`` fault: a page cut short (HTTP 200)."""

DAY_MS = 86_400_000
_PARAMS = {
    m.DEPOSIT_PATH: {"coin", "status", "startTime", "endTime", "offset", "limit", "includeSource", "txId"},
    m.WITHDRAWAL_PATH: {"coin", "withdrawOrderId", "status", "idList", "offset", "limit", "startTime", "endTime"},
    m.SUB_DEPOSIT_PATH: {"email", "coin", "status", "startTime", "endTime", "limit", "offset", "txId"},
    m.LOCALENTITY_WITHDRAWAL_PATH: {"trId", "txId", "withdrawOrderId", "network", "coin", "travelRuleStatus", "offset", "limit", "startTime", "endTime"},
    m.ACCOUNT_PATH: {"omitZeroBalances"},
}
Fault = tuple[str, float | None]
"""(kind, Retry-After): ``429``, ``418``, ``-1021``, ``-1022``, ``500``, ``not_json``, ``hangup``."""


class _Refusal(Exception):
    def __init__(self, status: int, code: int, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.status, self.code, self.msg, self.retry_after = status, code, msg, retry_after


class BinanceSimulator:
    def __init__(
        self,
        accounts: Sequence[SimAccount] | None = None,
        *,
        seed: int = 1,
        skew_ms: int = 0,
        ip_limit: int = 12_000,
        uid_limit: int = 180_000,
        api_limit: int = 6_000,
        withdrawal_weight: int = 18_000,
        ban_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ):
        self.accounts = {a.name: a for a in (accounts or default_accounts())}
        self._by_key = {a.api_key: a for a in self.accounts.values()}
        self.skew_ms = skew_ms
        self.limits = {"ip": ip_limit, "uid": uid_limit, "api": api_limit}
        self.weights = {path: e.weight for path, e in m.ENDPOINTS.items()} | {m.WITHDRAWAL_PATH: withdrawal_weight,
                                                                            m.LOCALENTITY_WITHDRAWAL_PATH: withdrawal_weight}
        self.ban_seconds = ban_seconds
        self._clock = clock
        self._rng = random.Random(seed)
        self._numbers = itertools.count(1)
        self.transfers: dict[str, SimTransfer] = {}
        self.stats: Counter[str] = Counter()
        self.faults: dict[str | None, deque[Fault]] = {}
        self._used: dict[tuple[str, str, str, int], int] = {}
        self._told_to_wait: dict[tuple[str, str, str], int] = {}
        self.banned_until_ms = 0
        self.weight_log: Counter[tuple[str, str, int]] = Counter()
        """(account, scope, minute) → weight charged: what each account spent per minute."""
        self.requests: list[tuple[float, str, str, int]] = []
        self._marks: list[tuple[Any, int]] = []
        """States put in the answer being built; counted as seen once that answer was written whole."""
        """(monotonic time, account or '?', path, HTTP status) of every request."""
        self.queries: list[tuple[str, str, dict[str, str]]] = []
        """(account, path, parameters) of every request that passed the checks."""
        self.signatures_seen: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> BinanceSimulator:
        app = web.Application()
        app.router.add_get(m.TIME_PATH, self._time)
        for path in (m.ACCOUNT_PATH, m.DEPOSIT_PATH, m.WITHDRAWAL_PATH, m.SUB_DEPOSIT_PATH, m.LOCALENTITY_WITHDRAWAL_PATH):
            app.router.add_get(path, self._signed)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now_ms(self) -> int:
        """The server clock (ours plus ``skew_ms``)."""
        return int(self._clock() * 1000) + self.skew_ms

    # -- scripting -----------------------------------------------------------------------------

    def create(self, script: str, account: str = "main", *, created_ms: int | None = None) -> SimTransfer:
        transfer = new_transfer(script, self.accounts[account], next(self._numbers), created_ms or self.now_ms(), self._rng)
        self.transfers[transfer.key] = transfer
        self.stats["transfers"] += 1
        self.stats["states"] += 1
        return transfer

    def create_many(self, count: int, accounts: Sequence[str] | None = None) -> list[SimTransfer]:
        names, scripts = list(accounts or self.accounts), list(SCRIPTS)
        return [self.create(scripts[i % len(scripts)], names[(i // len(scripts)) % len(names)]) for i in range(count)]

    def advance(self, transfer: SimTransfer) -> bool:
        moved = transfer.advance(self.now_ms())
        self.stats["states"] += moved
        return moved

    async def run_lifecycles(self, transfers: Sequence[SimTransfer], *, skip_every: int = 0, timeout: float = 60.0,
                             on_step: Callable[[int], Any] | None = None) -> int:
        """Advance every transfer to its end, each step only once an answer carried the current
        state (``skip_every``: every n-th step moves twice at once, a transition no poll can see).
        ``on_step(n)`` runs after the n-th step (to inject faults). Returns the steps taken."""
        deadline, steps = time.monotonic() + timeout, 0
        while True:
            pending = [t for t in transfers if not t.finished]
            if not pending:
                return steps
            for transfer in pending:
                if not transfer.observed:
                    continue
                self.advance(transfer)
                steps += 1
                if skip_every and steps % skip_every == 0 and self.advance(transfer):
                    self.stats["skipped_states"] += 1
                if on_step is not None:
                    result = on_step(steps)
                    if asyncio.iscoroutine(result):
                        await result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} transfers still moving after {timeout}s (never observed: {pending[0].key})")
            await asyncio.sleep(0.01)

    def fail(self, kind: str, *, account: str | None = None, times: int = 1, retry_after: float | None = None) -> None:
        """The next ``times`` signed requests (of ``account``, or anyone's) answer with this fault."""
        self.faults.setdefault(account, deque()).extend([(kind, retry_after)] * times)

    def truth(self) -> dict[str, list[Snapshot]]:
        return {key: list(t.history) for key, t in self.transfers.items()}

    def attempts(self, account: str) -> list[float]:
        return [at for at, who, _, _ in self.requests if who == account]

    def weight_per_minute(self, account: str, scope: str) -> dict[int, int]:
        return {minute: w for (who, s, minute), w in sorted(self.weight_log.items()) if who == account and s == scope}

    # -- HTTP ----------------------------------------------------------------------------------

    def _headers(self, scope: str, path: str, who: str, minute: int) -> dict[str, str]:
        used = self._used.get((path if scope != "api" else "/api", scope, who, minute), 0)
        if scope == "api":
            return {"X-MBX-USED-WEIGHT-1M": str(used)}
        return {f"X-SAPI-USED-{scope.upper()}-WEIGHT-1M": str(used)}

    def _charge(self, path: str, account: SimAccount | None) -> dict[str, str]:
        """Meter one request like Binance; 429 when over, 418 when told to wait and not waiting."""
        endpoint = m.ENDPOINTS[path]
        scope, weight = endpoint.scope, self.weights[path]
        who = str(account.uid) if scope == "uid" and account is not None else "ip"
        bucket = path if scope != "api" else "/api"
        now = self.now_ms()
        minute = now // 60_000
        waiting = self._told_to_wait.get((bucket, scope, who), 0)
        if waiting > now:  # it was told to wait and did not: Binance bans the IP
            self.banned_until_ms = now + int(self.ban_seconds * 1000)
            self.ban_seconds *= 2
            self.stats["bans_earned"] += 1
            raise _Refusal(418, -1003, "Way too many requests; IP banned.", (self.banned_until_ms - now) / 1000)
        key = (bucket, scope, who, minute)
        if self._used.get(key, 0) + weight > self.limits[scope]:
            until = (minute + 1) * 60_000
            self._told_to_wait[(bucket, scope, who)] = until
            self.stats["rate_limited"] += 1
            raise _Refusal(429, -1003, "Too much request weight used; please use WebSocket Streams.", max(1, (until - now + 999) // 1000))
        self._used[key] = self._used.get(key, 0) + weight
        self.weight_log[(account.name if account else "?", scope, minute)] += weight
        return self._headers(scope, path, who, minute)

    async def _time(self, request: web.Request) -> web.Response:
        try:
            if self.banned_until_ms > self.now_ms():
                self.stats["requests_while_banned"] += 1
                raise _Refusal(418, -1003, "IP banned until further notice.", (self.banned_until_ms - self.now_ms()) / 1000)
            headers = self._charge(m.TIME_PATH, None)
        except _Refusal as refusal:
            return self._refuse(refusal, "?", request.path)
        self.stats["time_requests"] += 1
        return web.json_response({"serverTime": self.now_ms()}, headers=headers)

    async def _signed(self, request: web.Request) -> web.StreamResponse:
        known = self._by_key.get(request.headers.get("X-MBX-APIKEY", ""))
        who = known.name if known is not None else "?"  # the attempt is the key's, even when refused
        try:
            if self.banned_until_ms > self.now_ms():
                self.stats["requests_while_banned"] += 1
                raise _Refusal(418, -1003, "IP banned until further notice.", (self.banned_until_ms - self.now_ms()) / 1000)
            account = self._authenticate(request)
            who = account.name
            fault = self._next_fault(account.name)
            if fault is not None:
                response = self._fault(fault, request)
                self.requests.append((time.monotonic(), who, request.path, response.status if response else 0))
                if response is None:  # hang up without an answer (what is written after is lost)
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response(status=500)
                return response
            params = self._params(request, account)
            self.queries.append((who, request.path, {k: v for k, v in params.items() if not k.startswith("_")}))
            headers = self._charge(request.path, account)
            self._marks = []
            body = self._answer(request.path, account, params)
            marks, self._marks = self._marks, []
        except _Refusal as refusal:
            return self._refuse(refusal, who, request.path)
        self.requests.append((time.monotonic(), who, request.path, 200))
        self.stats[f"ok {request.path}"] += 1
        # A state counts as seen by a poll only once its answer was written whole: a client that
        # went away meanwhile (a source restarted mid-request) never read it.
        payload = json.dumps(body, separators=(",", ":")).encode()
        response = web.StreamResponse(headers=headers)
        response.content_type, response.content_length = "application/json", len(payload)
        try:
            await response.prepare(request)
            await response.write(payload)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            return response
        for transfer, index in marks:
            transfer.seen.add(index)
        return response

    def _refuse(self, refusal: _Refusal, who: str, path: str) -> web.Response:
        self.requests.append((time.monotonic(), who, path, refusal.status))
        self.stats[f"error {refusal.code}"] += 1
        headers = {"Retry-After": str(int(refusal.retry_after + 0.999))} if refusal.retry_after is not None else {}
        return web.json_response({"code": refusal.code, "msg": refusal.msg}, status=refusal.status, headers=headers)

    def _next_fault(self, account: str) -> Fault | None:
        for queue in (self.faults.get(account), self.faults.get(None)):
            if queue:
                return queue.popleft()
        return None

    def _fault(self, fault: Fault, request: web.Request) -> web.Response | None:
        kind, retry_after = fault
        self.stats[f"fault {kind}"] += 1
        if kind in ("429", "418"):
            if kind == "418":
                self.banned_until_ms = self.now_ms() + int((retry_after or 120) * 1000)
            headers = {"Retry-After": str(int(retry_after or 1))}
            return web.json_response({"code": -1003, "msg": "Too many requests."}, status=int(kind), headers=headers)
        if kind in ("-1021", "-1022"):
            msg = "Timestamp for this request is outside of the recvWindow." if kind == "-1021" else "Signature for this request is not valid."
            return web.json_response({"code": int(kind), "msg": msg}, status=400)
        if kind == "500":
            return web.json_response({"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}, status=500)
        if kind == "not_json":
            return web.Response(body=NOT_JSON, content_type="application/json")
        return None  # hangup

    # -- checks, in Binance's order ------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> SimAccount:
        key = request.headers.get("X-MBX-APIKEY")
        if not key or len(key) < 8 or not key.isalnum():
            raise _Refusal(401, -2014, "API-key format invalid.")
        account = self._by_key.get(key)
        if account is None:
            raise _Refusal(401, -2015, "Invalid API-key, IP, or permissions for action.")
        raw = request.rel_url.raw_query_string
        payload, found, signature = raw.rpartition("&signature=")
        if not found:
            raise _Refusal(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        window = params.get("recvWindow", "5000")
        if not window.isdigit():
            raise _Refusal(400, -1102, "Mandatory parameter 'recvWindow' was not sent, was empty/null, or malformed.")
        if int(window) > 60_000:
            raise _Refusal(400, -1131, "recvWindow must be less than 60000")
        stamp = params.get("timestamp", "")
        if not stamp.isdigit():
            raise _Refusal(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        millis, now = int(stamp) // (1000 if len(stamp) > 13 else 1), self.now_ms()
        if millis >= now + 1000 or now - millis > int(window):
            self.stats["timestamp_rejected"] += 1
            raise _Refusal(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        self.signatures_seen.add(signature)
        if not self._verify(account, payload, signature):
            raise _Refusal(400, -1022, "Signature for this request is not valid.")
        return account

    @staticmethod
    def _verify(account: SimAccount, payload: str, signature: str) -> bool:
        if account.key_type == "hmac":
            expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, signature.lower())
        try:
            raw = base64.b64decode(unquote(signature), validate=True)
            public = account.public_key
            if isinstance(public, Ed25519PublicKey):
                public.verify(raw, payload.encode())
            else:
                assert public is not None
                public.verify(raw, payload.encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    def _params(self, request: web.Request, account: SimAccount) -> dict[str, str]:
        params = {k: v for k, v in request.query.items() if k not in ("recvWindow", "timestamp", "signature")}
        unknown = set(params) - _PARAMS[request.path]
        if unknown:
            raise _Refusal(400, -1104, f"Not all sent parameters were read; read {len(params) - len(unknown)} parameter(s) but was sent {len(params)}.")
        if request.path == m.SUB_DEPOSIT_PATH:
            email = params.get("email")
            if not email:
                raise _Refusal(400, -1102, "Mandatory parameter 'email' was not sent, was empty/null, or malformed.")
            sub = next((a for a in self.accounts.values() if a.email == email and a.master == account.name), None)
            if sub is None:
                raise _Refusal(400, -12022, "Sub-account not found or not yours.")
        limit = params.get("limit", "1000")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise _Refusal(400, -1130, "Data sent for parameter 'limit' is not valid.")
        if len(params.get("idList", "").split(",")) > 45:
            raise _Refusal(400, -1130, "Data sent for parameter 'idList' is not valid.")
        now = self.now_ms()
        start, end = params.get("startTime"), params.get("endTime")
        end_ms = int(end) if end else now
        start_ms = int(start) if start else end_ms - 90 * DAY_MS
        if start_ms > end_ms:
            raise _Refusal(400, -1128, "Combination of optional parameters invalid: startTime > endTime.")
        if end_ms - start_ms >= 90 * DAY_MS and (start and end):
            raise _Refusal(400, -1127, "More than 90 days between startTime and endTime.")
        params["_start"], params["_end"] = str(start_ms), str(end_ms)
        return params

    def _answer(self, path: str, account: SimAccount, params: dict[str, str]) -> Any:
        if path == m.ACCOUNT_PATH:
            return {"makerCommission": 10, "canTrade": True, "accountType": "SPOT", "balances": [], "permissions": ["SPOT"], "uid": account.uid}
        if path == m.SUB_DEPOSIT_PATH:
            owners = {a.name for a in self.accounts.values() if a.email == params["email"]}
            direction = "deposit"
        else:
            owners = {account.name}
            direction = "withdrawal" if path in (m.WITHDRAWAL_PATH, m.LOCALENTITY_WITHDRAWAL_PATH) else "deposit"
        start, end = int(params["_start"]), int(params["_end"])
        ids = set(params["idList"].split(",")) if params.get("idList") else None
        rows = [
            t for t in self.transfers.values()
            if t.direction == direction and t.owner.name in owners and start <= t.created_ms <= end
            and (ids is None or t.transfer_id in ids) and (t.serve_limit is None or t.served < t.serve_limit)
            and (not params.get("txId") or t.row.get("txId") == params["txId"])
            and (not params.get("coin") or t.row["coin"] == params["coin"])
            and (not params.get("status") or str(t.row["status"]) == params["status"])
        ]
        rows.sort(key=lambda t: (t.created_ms, t.transfer_id), reverse=True)  # newest first
        offset, limit = int(params.get("offset", "0") or 0), int(params.get("limit", "1000"))
        page = rows[offset : offset + limit]
        out = []
        for transfer in page:
            transfer.observed, transfer.served = True, transfer.served + 1
            self._marks.append((transfer, len(transfer.history) - 1))
            row = dict(transfer.row)
            if path == m.SUB_DEPOSIT_PATH:  # Binance's example omits these for subHisrec
                row.pop("completeTime", None)
                row.pop("travelRuleStatus", None)
            elif path == m.LOCALENTITY_WITHDRAWAL_PATH:  # the travel-rule history's shape (v1)
                row = {"trId": int(transfer.transfer_id[:12], 16), "withdrawalStatus": row.pop("status"), "travelRuleStatus": transfer.step.travel, **row}
            elif direction == "deposit" and params.get("includeSource") == "true":
                row["sourceAddress"] = f"sim-sender-{transfer.transfer_id[-4:]}"
            out.append(row)
        self.stats["rows_served"] += len(out)
        return out
