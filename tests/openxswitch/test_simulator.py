"""The sender behaves like the provider: signed, new requestIds on re-delivery, retries on non-2xx.

These run against a scripted HTTP peer (no bridge, no broker): they pin down the simulator itself,
so the end-to-end tests can trust its ground truth.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bridge.contract.events import Status
from bridge.contract.jsonutil import loads_exact
from bridge.sources.openxswitch.signature import HEADER, verify
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, SimDelivery
from tests.support import serve_app

SECRET = "sim-secret"


@contextlib.asynccontextmanager
async def peer(answer: Callable[[bytes, int], int]) -> AsyncIterator[tuple[str, list[tuple[bytes, str]]]]:
    """A loopback endpoint answering ``answer(body, n)`` for the n-th request; records what came."""
    seen: list[tuple[bytes, str]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((body, request.headers.get(HEADER, "")))
        return web.Response(status=answer(body, len(seen)))

    app = web.Application()
    app.router.add_post("/hook", handle)
    async with serve_app(app) as base:
        yield f"{base}/hook", seen


def test_withdrawal_script_is_unconfirmed_then_confirmed() -> None:
    sim = OpenXSwitchSimulator("http://unused", SECRET)
    transfer = sim.withdrawal()
    assert [s.method for s in transfer.states] == ["withdraw.unconfirmed", "withdraw.confirmed"]
    assert [s.event.status for s in transfer.states] == [Status.PENDING, Status.COMPLETED]
    assert transfer.states[0].params["hash"] is None and transfer.states[1].params["hash"]


def test_deposit_script_has_rising_confirmations_and_ends_final() -> None:
    sim = OpenXSwitchSimulator("http://unused", SECRET)
    transfer = sim.deposit(confirmations=4)
    assert [s.method for s in transfer.states] == ["deposit.pending"] + ["deposit.updated"] * 4 + ["deposit.success"]
    confirmations = [s.event.confirmations for s in transfer.states]
    assert confirmations == sorted(confirmations) and len(set(confirmations)) == len(confirmations)
    assert [s.is_final for s in transfer.states] == [False] * 5 + [True]


def test_internal_deposit_script_has_no_hash() -> None:
    sim = OpenXSwitchSimulator("http://unused", SECRET)
    transfer = sim.deposit(internal=True, tag_memo="55")
    assert [s.method for s in transfer.states] == ["deposit.pending", "deposit.success"]
    assert all(s.event.tx_hash is None and s.event.internal for s in transfer.states)


def test_a_redelivery_has_a_new_request_id_and_the_same_state() -> None:
    sim = OpenXSwitchSimulator("http://unused", SECRET)
    transfer = sim.withdrawal()
    first, again = sim.delivery(transfer, 1), sim.delivery(transfer, 1, redelivery=True)
    assert first.request_id != again.request_id
    assert loads_exact(first.body)["requestId"] == first.request_id
    assert first.state is again.state


def test_plans_mix_redeliveries_concurrent_sends_and_out_of_order_states() -> None:
    sim = OpenXSwitchSimulator("http://unused", SECRET, seed=7)
    sim.lifecycles(withdrawals=20, deposits=20)
    plan = sim.plan(redeliver=0.5, concurrent=0.3, out_of_order=0.3, others=4)
    deliveries = plan.deliveries
    assert any(d.redelivery for d in deliveries)
    assert any(len(step) > 1 for transfer in plan.steps for step in transfer)
    assert sum(d.state is None for d in deliveries) == 4
    lifecycle_orders = [
        [step[0].state.event.occurred_at for step in t if step[0].state is not None and not step[0].redelivery] for t in plan.steps
    ]
    assert any(order != sorted(order) for order in lifecycle_orders), "some transfer's states go out of order"
    request_ids = [d.request_id for d in deliveries]
    assert len(set(request_ids)) == len(request_ids), "every delivery has its own requestId"


async def test_posts_are_signed_over_the_exact_body_in_hex_or_base64() -> None:
    for encoding in ("hex", "base64"):
        async with peer(lambda body, n: 200) as (url, seen):
            sim = OpenXSwitchSimulator(url, SECRET, encoding=encoding)  # type: ignore[arg-type]
            sim.withdrawal()
            report = await sim.send(sim.plan())
        assert report.acked == 2
        for body, header in seen:
            assert verify(header, body, [SECRET.encode()]) == 0
            assert (len(header) == 64) is (encoding == "hex")


async def test_non_2xx_answers_are_retried_until_acknowledged() -> None:
    async with peer(lambda body, n: 503 if n <= 2 else 200) as (url, seen):
        sim = OpenXSwitchSimulator(url, SECRET, retry_interval=0.05)
        transfer = sim.withdrawal()
        delivery = sim.delivery(transfer, 0)
        report = await sim.send([delivery])
    assert delivery.attempts == [503, 503, 200]
    assert delivery.acked and report.acked == 1 and report.statuses[503] == 2
    assert len({body for body, _ in seen}) == 1, "a retry resends the same delivery"


async def test_later_states_go_out_while_an_earlier_one_waits_for_its_retry() -> None:
    first_body: list[bytes] = []

    def answer(body: bytes, n: int) -> int:
        if n == 1:
            first_body.append(body)
            return 500
        return 200

    async with peer(answer) as (url, seen):
        sim = OpenXSwitchSimulator(url, SECRET, retry_interval=0.2)
        sim.withdrawal()
        await sim.send(sim.plan())
    methods = [loads_exact(body)["method"] for body, _ in seen]
    assert methods == ["withdraw.unconfirmed", "withdraw.confirmed", "withdraw.unconfirmed"]


async def test_the_sender_gives_up_after_the_retry_window() -> None:
    async with peer(lambda body, n: 503) as (url, _):
        sim = OpenXSwitchSimulator(url, SECRET, retry_interval=0.05, retry_window=0.2)
        delivery = sim.delivery(sim.withdrawal(), 0)
        report = await sim.send([delivery])
    assert delivery.given_up and not delivery.acked
    assert report.given_up == 1 and 2 <= len(delivery.attempts) <= 5


def test_ground_truth_excuses_only_states_acknowledged_after_the_final_was_posted() -> None:
    sim = OpenXSwitchSimulator("http://unused", SECRET)
    transfer = sim.deposit(confirmations=1)
    pending, updated, success = (sim.delivery(transfer, i) for i in range(3))

    def at(d: SimDelivery, posted: float, acked: float | None) -> None:
        d.first_post_at, d.acked_at = posted, acked

    at(pending, 1.0, 1.1)  # acked before the final was posted: must be published
    at(success, 2.0, 2.1)  # final, acked: must
    at(updated, 1.5, 2.5)  # acked after the final was posted: may be stale
    must, may = sim.expected([pending, updated, success])
    ids = [s.event.event_id for s in transfer.states]
    assert must == {ids[0], ids[2]} and may == set(ids)
    verdict = sim.verdict([ids[0], ids[2], ids[2]], [pending, updated, success])
    assert verdict.duplicated == {ids[2]} and not verdict.lost and not verdict.ok
    assert sim.verdict([ids[2]], [pending, updated, success]).lost == {ids[0]}


def test_the_secret_is_not_in_the_simulators_repr() -> None:
    assert SECRET not in repr(OpenXSwitchSimulator("http://x", SECRET))
